// src/tier/order_graph.h
//
// The learned lock order (internal), a module of its own like Abseil's
// GraphCycles: nodes, edges and the sites that made each edge; nothing of
// contexts, tiers or reports.
//   OrderGraph - a directed graph over lock-file identities that only grows
//                and is kept acyclic.
#ifndef TIERLOCK_SRC_TIER_ORDER_GRAPH_H_
#define TIERLOCK_SRC_TIER_ORDER_GRAPH_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "base/mutex.h"
#include "platform/platform.h"
#include "tierlock/mode.h"
#include "tierlock/source_location.h"
#include "tierlock/tier.h"

namespace tierlock::internal {

// OrderGraph
//
// An edge A -> B means B was taken while A was held. An edge that would close
// a cycle is refused (and the path that it would close returned), never
// added. Because every held lock was taken while the older held ones were
// held, a task's held stack is a path in the graph, so a new edge from a held
// lock to the lock N being taken closes a cycle exactly when N reaches some
// held lock.
//
// Thread-safety: every member may be called from any thread; one internal
// mutex, held for map lookups and the search, never across a syscall.
//
// Example:
//   OrderGraph g;
//   OrderGraph::Node a = g.node_of(id_a, "/x/a", same_file);
//   OrderGraph::Node b = g.node_of(id_b, "/x/b", same_file);
//   // b taken while a is held: learned.
//   g.add_unless_cycle(b, {{a, b, site_a, site_b}}, {a});  // empty
//   // a taken while b is held: refused, with the edge it would reverse.
//   g.add_unless_cycle(a, {{b, a, site_b, site_a}}, {b});  // {a -> b}
class OrderGraph {
 public:
  using Node = std::uint32_t;  // 1-based; 0 is no node

  // One end of an edge as it was taken, for reports.
  struct Site {
    std::string lock_file;
    std::optional<Tier> tier;
    Mode mode = Mode::kExclusive;
    SourceLocation where;
    std::string task;
  };
  // `inner` (node `to`) was taken while `outer` (node `from`) was held.
  struct Edge {
    Node from = 0;
    Node to = 0;
    Site outer;
    Site inner;
  };

  OrderGraph() = default;
  OrderGraph(const OrderGraph&) = delete;
  OrderGraph& operator=(const OrderGraph&) = delete;

  // Returns the node of the file with identity `id` at `path` (never 0). One
  // node per identity, so hard links are one node. An identity can be reused
  // by a new file once the old one is deleted: met again at another path, it
  // is the same node only if `same_file(first_path)` says the path it was
  // first seen at still names it (a hard link); otherwise it gets a new node.
  // `same_file` is called without the graph's lock (it may make syscalls).
  Node node_of(
      const platform::FileId& id, const std::string& path,
      absl::FunctionRef<bool(const std::string& first_path)> same_file);

  // True if the edge from -> to is in the graph.
  bool has_edge(Node from, Node to) const;

  // Adds `edges` (each ending at `to`; one already in the graph keeps its
  // first sites) unless `to` reaches a node of `held`, which would close a
  // cycle: then adds none and returns the path from `to` to the first node
  // of `held` reached, as its edges. Empty: added. When every edge is in the
  // graph already there is nothing to search.
  std::vector<Edge> add_unless_cycle(Node to, const std::vector<Edge>& edges,
                                     const absl::flat_hash_set<Node>& held);

  // The number of nodes (tests).
  std::size_t size() const;

 private:
  std::vector<Edge> find_path(Node from,
                              const absl::flat_hash_set<Node>& targets) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable Mutex mu_;
  // The node of each file identity, with the path it was first seen at.
  absl::flat_hash_map<platform::FileId, std::pair<std::string, Node>> node_of_
      ABSL_GUARDED_BY(mu_);
  // out_[n]: the edges from node n, by their end (out_[0] unused).
  std::vector<absl::flat_hash_map<Node, Edge>> out_ ABSL_GUARDED_BY(mu_) =
      std::vector<absl::flat_hash_map<Node, Edge>>(1);
};

}  // namespace tierlock::internal

#endif  // TIERLOCK_SRC_TIER_ORDER_GRAPH_H_
