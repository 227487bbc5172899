// The learned lock order on its own (src/tier/order_graph.h): nodes per file
// identity, edges that only grow, and cycles refused with their path.
#include "tier/order_graph.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tierlock::internal {
namespace {

using Node = OrderGraph::Node;

OrderGraph::Site site(std::string lock_file, std::string task = "t") {
  OrderGraph::Site s;
  s.lock_file = std::move(lock_file);
  s.task = std::move(task);
  return s;
}

// The edge from -> to, its ends named after the nodes.
OrderGraph::Edge edge(Node from, Node to, std::string task = "t") {
  return {from, to, site("/l/" + std::to_string(from), task),
          site("/l/" + std::to_string(to), task)};
}

bool never_same(const std::string&) { return false; }

TEST(OrderGraphTest, OneNodePerIdentityAndPath) {
  OrderGraph g;
  const Node a = g.node_of({1, 10}, "/l/a", never_same);
  const Node b = g.node_of({1, 11}, "/l/b", never_same);
  EXPECT_NE(a, 0u);
  EXPECT_NE(b, 0u);
  EXPECT_NE(a, b);
  EXPECT_EQ(g.node_of({1, 10}, "/l/a", never_same), a);
  EXPECT_EQ(g.size(), 2u);
}

TEST(OrderGraphTest, HardLinkIsOneNodeWhileTheFirstPathStillNamesIt) {
  OrderGraph g;
  const Node a = g.node_of({1, 10}, "/l/a", never_same);
  std::vector<std::string> asked;
  const Node link = g.node_of({1, 10}, "/m/a", [&](const std::string& first) {
    asked.push_back(first);
    return true;
  });
  EXPECT_EQ(link, a);
  EXPECT_EQ(asked, std::vector<std::string>{"/l/a"});
}

TEST(OrderGraphTest, ReusedIdentityElsewhereIsANewNode) {
  OrderGraph g;
  const Node a = g.node_of({1, 10}, "/l/a", never_same);
  // The first file is gone and its inode number now names another file.
  const Node reused = g.node_of({1, 10}, "/l/other", never_same);
  EXPECT_NE(reused, a);
  EXPECT_EQ(g.node_of({1, 10}, "/l/other", never_same), reused);
}

TEST(OrderGraphTest, LearnsANestingAndRefusesItsReverseWithTheEdge) {
  OrderGraph g;
  const Node a = g.node_of({1, 1}, "/l/a", never_same);
  const Node b = g.node_of({1, 2}, "/l/b", never_same);
  EXPECT_TRUE(g.add_unless_cycle(b, {edge(a, b, "first")}, {a}).empty());
  EXPECT_TRUE(g.has_edge(a, b));
  EXPECT_FALSE(g.has_edge(b, a));

  std::vector<OrderGraph::Edge> path = g.add_unless_cycle(a, {edge(b, a)}, {b});
  ASSERT_EQ(path.size(), 1u);
  EXPECT_EQ(path[0].from, a);
  EXPECT_EQ(path[0].to, b);
  EXPECT_EQ(path[0].outer.task, "first");
  EXPECT_FALSE(g.has_edge(b, a));  // refused: nothing added
}

TEST(OrderGraphTest, RefusesALongerCycleWithItsWholePath) {
  OrderGraph g;
  const Node a = g.node_of({1, 1}, "/l/a", never_same);
  const Node b = g.node_of({1, 2}, "/l/b", never_same);
  const Node c = g.node_of({1, 3}, "/l/c", never_same);
  ASSERT_TRUE(g.add_unless_cycle(b, {edge(a, b)}, {a}).empty());
  ASSERT_TRUE(g.add_unless_cycle(c, {edge(b, c)}, {b}).empty());
  // a while holding c: a reaches c through b.
  std::vector<OrderGraph::Edge> path = g.add_unless_cycle(a, {edge(c, a)}, {c});
  ASSERT_EQ(path.size(), 2u);
  EXPECT_EQ(path[0].from, a);
  EXPECT_EQ(path[0].to, b);
  EXPECT_EQ(path[1].from, b);
  EXPECT_EQ(path[1].to, c);
}

TEST(OrderGraphTest, AReachableLockThatIsNotHeldIsNoCycle) {
  OrderGraph g;
  const Node a = g.node_of({1, 1}, "/l/a", never_same);
  const Node b = g.node_of({1, 2}, "/l/b", never_same);
  const Node c = g.node_of({1, 3}, "/l/c", never_same);
  ASSERT_TRUE(g.add_unless_cycle(b, {edge(a, b)}, {a}).empty());
  // a while holding c: a reaches b, but b is not held.
  EXPECT_TRUE(g.add_unless_cycle(a, {edge(c, a)}, {c}).empty());
  EXPECT_TRUE(g.has_edge(c, a));
}

TEST(OrderGraphTest, SeveralEdgesAreAddedTogetherOrNotAtAll) {
  OrderGraph g;
  const Node a = g.node_of({1, 1}, "/l/a", never_same);
  const Node b = g.node_of({1, 2}, "/l/b", never_same);
  const Node c = g.node_of({1, 3}, "/l/c", never_same);
  ASSERT_TRUE(g.add_unless_cycle(b, {edge(a, b)}, {a}).empty());
  // c while holding a and b (another task's stack): both edges.
  EXPECT_TRUE(g.add_unless_cycle(c, {edge(a, c), edge(b, c)}, {a, b}).empty());
  EXPECT_TRUE(g.has_edge(a, c));
  EXPECT_TRUE(g.has_edge(b, c));
  // a while holding c and another d: refused, so neither edge goes in.
  const Node d = g.node_of({1, 4}, "/l/d", never_same);
  EXPECT_FALSE(g.add_unless_cycle(a, {edge(d, a), edge(c, a)}, {c, d}).empty());
  EXPECT_FALSE(g.has_edge(d, a));
  EXPECT_FALSE(g.has_edge(c, a));
}

TEST(OrderGraphTest, AnEdgeKeepsTheSitesThatMadeItFirst) {
  OrderGraph g;
  const Node a = g.node_of({1, 1}, "/l/a", never_same);
  const Node b = g.node_of({1, 2}, "/l/b", never_same);
  ASSERT_TRUE(g.add_unless_cycle(b, {edge(a, b, "first")}, {a}).empty());
  ASSERT_TRUE(g.add_unless_cycle(b, {edge(a, b, "second")}, {a}).empty());
  std::vector<OrderGraph::Edge> path = g.add_unless_cycle(a, {edge(b, a)}, {b});
  ASSERT_EQ(path.size(), 1u);
  EXPECT_EQ(path[0].inner.task, "first");
}

}  // namespace
}  // namespace tierlock::internal
