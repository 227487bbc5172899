// The learned lock order: see order_graph.h.
#include "tier/order_graph.h"

#include <algorithm>

namespace tierlock::internal {

OrderGraph::Node OrderGraph::node_of(
    const platform::FileId& id, const std::string& path,
    absl::FunctionRef<bool(const std::string& first_path)> same_file) {
  std::string seen_at;
  {
    UniqueLock lock(mu_);
    auto it = node_of_.find(id);
    if (it != node_of_.end() && it->second.first == path) {
      return it->second.second;
    }
    if (it != node_of_.end()) seen_at = it->second.first;
  }
  // Asked outside the lock: a path walk can be slow.
  const bool same = !seen_at.empty() && same_file(seen_at);
  UniqueLock lock(mu_);
  auto [it, inserted] = node_of_.try_emplace(id, path, 0);
  if (!inserted && (same || it->second.first == path)) {
    return it->second.second;
  }
  const Node node = static_cast<Node>(out_.size());
  out_.emplace_back();
  it->second = {path, node};
  return node;
}

bool OrderGraph::has_edge(Node from, Node to) const {
  UniqueLock lock(mu_);
  return from < out_.size() && out_[from].contains(to);
}

std::vector<OrderGraph::Edge> OrderGraph::add_unless_cycle(
    Node to, const std::vector<Edge>& edges,
    const absl::flat_hash_set<Node>& held) {
  UniqueLock lock(mu_);
  bool all_known = true;
  for (const Edge& e : edges) {
    if (!out_[e.from].contains(to)) all_known = false;
  }
  // Known edges keep the graph acyclic with them: nothing to search.
  if (!all_known) {
    std::vector<Edge> path = find_path(to, held);
    if (!path.empty()) return path;
  }
  for (const Edge& e : edges) out_[e.from].try_emplace(to, e);
  return {};
}

std::size_t OrderGraph::size() const {
  UniqueLock lock(mu_);
  return out_.size() - 1;
}

// Iterative DFS.
std::vector<OrderGraph::Edge> OrderGraph::find_path(
    Node from, const absl::flat_hash_set<Node>& targets) const {
  absl::flat_hash_map<Node, Node> parent;  // node -> via
  std::vector<Node> stack = {from};
  parent.emplace(from, from);
  Node found = 0;
  while (!stack.empty() && found == 0) {
    const Node n = stack.back();
    stack.pop_back();
    for (const auto& [next, edge] : out_[n]) {
      if (!parent.emplace(next, n).second) continue;
      if (targets.contains(next)) {
        found = next;
        break;
      }
      stack.push_back(next);
    }
  }
  std::vector<Edge> path;
  if (found == 0) return path;
  for (Node n = found; n != from;) {
    const Node p = parent.at(n);
    path.push_back(out_[p].at(n));
    n = p;
  }
  std::reverse(path.begin(), path.end());
  return path;
}

}  // namespace tierlock::internal
