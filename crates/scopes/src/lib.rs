//! The cancel-scope tree of asyncbis, in plain Rust (no Python).
//!
//! Every task owns a chain of scope nodes: its *task node* (the root of the task, a child of the
//! scope of the task group it was spawned into) and one node per cancel scope it has entered.
//! Cancelling a node marks every node below it (down to the first shield) *effectively
//! cancelled* and reports which tasks must be woken up.
//!
//! Bookkeeping is O(1) per open/close: children hang off an intrusive doubly-linked sibling
//! list, nodes and tasks live in free-listed arenas and are named by (index, generation) ids,
//! so a stale id held by an abandoned scope can never reach a recycled slot.
//!
//! Only cancel propagation walks: a cancel or shield change visits the affected subtree once.

#![forbid(unsafe_code)]

/// Names a node; stale once the node is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId {
    idx: u32,
    gen: u32,
}

/// Names a task; stale once the task is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskId {
    idx: u32,
    gen: u32,
}

impl TaskId {
    /// A number that identifies the task while it lives (used to mark delivered cancellations).
    pub fn as_u64(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.idx)
    }
}

#[derive(Debug, Default)]
struct Node {
    gen: u32,
    live: bool,
    parent: Option<NodeId>,
    first_child: Option<u32>,
    prev_sibling: Option<u32>,
    next_sibling: Option<u32>,
    task: Option<TaskId>,
    cancel_called: bool,
    shield: bool,
    /// Cancelled itself, or (unshielded) below an effectively cancelled node.
    effective: bool,
    deadline: f64,
    /// Why it was cancelled (becomes the CancelledError's message).
    reason: Option<String>,
}

#[derive(Debug, Default)]
struct TaskSlot {
    gen: u32,
    live: bool,
    /// Opaque handle given by the embedding layer (asyncbis: a borrowed pointer to the task).
    handle: usize,
    /// The innermost node of this task's stack.
    current: Option<NodeId>,
    /// While set (a task group waiting for its children), cancellation is not delivered.
    delivery_suppressed: bool,
    /// Edge mode: one cancellation is owed to this task.
    edge_pending: bool,
}

/// A task that a cancellation reached, to be woken by the embedding layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wake {
    pub task: TaskId,
    pub handle: usize,
}

/// Errors of misuse, reported to Python as RuntimeError with these texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeError {
    StaleNode,
    StaleTask,
    NotInnermost,
}

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TreeError::StaleNode => "the cancel scope is not active (already exited?)",
            TreeError::StaleTask => "the task has already finished",
            TreeError::NotInnermost => {
                "cancel scopes must be exited in the reverse order they were entered \
                 (an inner scope or task group of this task is still active)"
            }
        })
    }
}

impl std::error::Error for TreeError {}

#[derive(Debug, Default)]
pub struct Tree {
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    tasks: Vec<TaskSlot>,
    free_tasks: Vec<u32>,
    live_nodes: usize,
    live_tasks: usize,
}

impl Tree {
    pub const fn new() -> Self {
        Tree {
            nodes: Vec::new(),
            free_nodes: Vec::new(),
            tasks: Vec::new(),
            free_tasks: Vec::new(),
            live_nodes: 0,
            live_tasks: 0,
        }
    }

    pub fn live_nodes(&self) -> usize {
        self.live_nodes
    }

    pub fn live_tasks(&self) -> usize {
        self.live_tasks
    }

    fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes
            .get(id.idx as usize)
            .filter(|n| n.live && n.gen == id.gen)
    }

    fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes
            .get_mut(id.idx as usize)
            .filter(|n| n.live && n.gen == id.gen)
    }

    fn task(&self, id: TaskId) -> Option<&TaskSlot> {
        self.tasks
            .get(id.idx as usize)
            .filter(|t| t.live && t.gen == id.gen)
    }

    fn task_mut(&mut self, id: TaskId) -> Option<&mut TaskSlot> {
        self.tasks
            .get_mut(id.idx as usize)
            .filter(|t| t.live && t.gen == id.gen)
    }

    fn id_at(&self, idx: u32) -> NodeId {
        NodeId {
            idx,
            gen: self.nodes[idx as usize].gen,
        }
    }

    /// Registers a task. Its stack is empty until `open_task_node`.
    pub fn add_task(&mut self, handle: usize) -> TaskId {
        self.live_tasks += 1;
        let slot = TaskSlot {
            live: true,
            handle,
            ..Default::default()
        };
        if let Some(idx) = self.free_tasks.pop() {
            let t = &mut self.tasks[idx as usize];
            let gen = t.gen.wrapping_add(1);
            *t = TaskSlot { gen, ..slot };
            TaskId { idx, gen }
        } else {
            let idx = self.tasks.len() as u32;
            self.tasks.push(slot);
            TaskId { idx, gen: 0 }
        }
    }

    /// Forgets a task (finished or destroyed). Nodes it still owns are closed.
    pub fn remove_task(&mut self, task: TaskId) {
        let Some(slot) = self.task(task) else { return };
        let mut cur = slot.current;
        // Close the task's remaining stack, innermost first (abandoned scopes).
        while let Some(id) = cur {
            let Some(n) = self.node(id) else { break };
            if n.task != Some(task) {
                break;
            }
            let parent = n.parent;
            self.unlink_and_free(id);
            cur = parent;
        }
        let t = &mut self.tasks[task.idx as usize];
        t.live = false;
        t.current = None;
        self.free_tasks.push(task.idx);
        self.live_tasks -= 1;
    }

    /// The task's innermost open node (its current scope).
    pub fn current_node(&self, task: TaskId) -> Option<NodeId> {
        self.task(task).and_then(|t| t.current)
    }

    /// Whether `cancel()` was called on the node itself (not only reached by a cancellation).
    pub fn cancel_called(&self, id: NodeId) -> bool {
        self.node(id).is_some_and(|n| n.cancel_called)
    }

    pub fn node_alive(&self, id: NodeId) -> bool {
        self.node(id).is_some()
    }

    fn alloc_node(&mut self, node: Node) -> NodeId {
        self.live_nodes += 1;
        if let Some(idx) = self.free_nodes.pop() {
            let n = &mut self.nodes[idx as usize];
            let gen = n.gen.wrapping_add(1);
            *n = Node { gen, ..node };
            NodeId { idx, gen }
        } else {
            let idx = self.nodes.len() as u32;
            self.nodes.push(node);
            NodeId { idx, gen: 0 }
        }
    }

    fn link_child(&mut self, parent: NodeId, child: NodeId) {
        let old_first = self.nodes[parent.idx as usize].first_child;
        {
            let c = &mut self.nodes[child.idx as usize];
            c.next_sibling = old_first;
            c.prev_sibling = None;
        }
        if let Some(f) = old_first {
            self.nodes[f as usize].prev_sibling = Some(child.idx);
        }
        self.nodes[parent.idx as usize].first_child = Some(child.idx);
    }

    fn unlink_and_free(&mut self, id: NodeId) {
        let (parent, prev, next, first_child) = {
            let n = &self.nodes[id.idx as usize];
            (n.parent, n.prev_sibling, n.next_sibling, n.first_child)
        };
        if let Some(p) = prev {
            self.nodes[p as usize].next_sibling = next;
        } else if let Some(parent) = parent.filter(|p| self.node(*p).is_some()) {
            self.nodes[parent.idx as usize].first_child = next;
        }
        if let Some(nx) = next {
            self.nodes[nx as usize].prev_sibling = prev;
        }
        // Children left behind (tasks still running in a group whose scope is gone, which the
        // embedding layer prevents, or abandoned stacks) become roots of their own.
        let mut c = first_child;
        while let Some(ci) = c {
            let cn = &mut self.nodes[ci as usize];
            c = cn.next_sibling;
            cn.parent = None;
            cn.prev_sibling = None;
            cn.next_sibling = None;
        }
        let n = &mut self.nodes[id.idx as usize];
        n.live = false;
        n.first_child = None;
        n.parent = None;
        n.task = None;
        self.free_nodes.push(id.idx);
        self.live_nodes -= 1;
    }

    /// Opens the root node of a task, as a child of `parent` (a task group's scope) or as a root.
    pub fn open_task_node(
        &mut self,
        task: TaskId,
        parent: Option<NodeId>,
    ) -> Result<NodeId, TreeError> {
        if self.task(task).is_none() {
            return Err(TreeError::StaleTask);
        }
        self.open(
            task,
            parent.filter(|p| self.node(*p).is_some()),
            false,
            false,
        )
    }

    /// Opens a cancel scope as the new innermost node of `task`.
    pub fn open_scope(
        &mut self,
        task: TaskId,
        shield: bool,
        cancel_called: bool,
        deadline: f64,
    ) -> Result<NodeId, TreeError> {
        let parent = self.task(task).ok_or(TreeError::StaleTask)?.current;
        let id = self.open(task, parent, shield, cancel_called)?;
        self.nodes[id.idx as usize].deadline = deadline;
        Ok(id)
    }

    fn open(
        &mut self,
        task: TaskId,
        parent: Option<NodeId>,
        shield: bool,
        cancel_called: bool,
    ) -> Result<NodeId, TreeError> {
        let parent_effective = parent
            .and_then(|p| self.node(p))
            .is_some_and(|p| p.effective);
        let effective = cancel_called || (!shield && parent_effective);
        let id = self.alloc_node(Node {
            live: true,
            parent,
            task: Some(task),
            cancel_called,
            shield,
            effective,
            deadline: f64::INFINITY,
            ..Default::default()
        });
        if let Some(p) = parent {
            self.link_child(p, id);
        }
        let slot = self.task_mut(task).ok_or(TreeError::StaleTask)?;
        slot.current = Some(id);
        if effective {
            slot.edge_pending = true;
        }
        Ok(id)
    }

    /// Closes the innermost node of its task. Returns the node that becomes innermost.
    pub fn close(&mut self, id: NodeId) -> Result<Option<NodeId>, TreeError> {
        let node = self.node(id).ok_or(TreeError::StaleNode)?;
        let parent = node.parent;
        if let Some(task) = node.task {
            let slot = self.task(task).ok_or(TreeError::StaleTask)?;
            if slot.current != Some(id) {
                return Err(TreeError::NotInnermost);
            }
            // The task's stack continues at the parent only if the parent is the same task's.
            let next = parent.filter(|p| self.node(*p).is_some_and(|n| n.task == Some(task)));
            self.tasks[task.idx as usize].current = next;
        }
        self.unlink_and_free(id);
        Ok(parent)
    }

    /// The nodes of `id`'s task stacked above `id`, innermost first; `None` if `id` is not in
    /// its task's stack (stale, or removed from it already).
    pub fn nodes_above(&self, id: NodeId) -> Option<Vec<NodeId>> {
        let task = self.node(id)?.task?;
        let mut above = Vec::new();
        let mut cur = self.task(task)?.current;
        while let Some(c) = cur {
            if c == id {
                return Some(above);
            }
            let n = self.node(c)?;
            if n.task != Some(task) {
                return None;
            }
            above.push(c);
            cur = n.parent;
        }
        None
    }

    /// Removes a node from wherever it is in its task's stack (not only the innermost): its
    /// children move up to its parent and their flags are recomputed, and the task's stack
    /// skips it. Used for scopes that cannot be closed in order: ones left open by a suspended
    /// generator frame, and the inner scopes abandoned by a misnested exit. Returns the tasks
    /// a now visible cancellation must wake.
    pub fn splice_out(&mut self, id: NodeId) -> Result<Vec<Wake>, TreeError> {
        let node = self.node(id).ok_or(TreeError::StaleNode)?;
        let (parent, task, was_effective) = (node.parent, node.task, node.effective);
        let parent = parent.filter(|p| self.node(*p).is_some());
        // Move the children under the parent (or make them roots, as close() does).
        let mut children = Vec::new();
        let mut c = node.first_child;
        while let Some(ci) = c {
            children.push(ci);
            c = self.nodes[ci as usize].next_sibling;
        }
        {
            let n = &mut self.nodes[id.idx as usize];
            n.first_child = None;
        }
        for &ci in &children {
            let cid = self.id_at(ci);
            let cn = &mut self.nodes[ci as usize];
            cn.parent = parent;
            cn.prev_sibling = None;
            cn.next_sibling = None;
            if let Some(p) = parent {
                self.link_child(p, cid);
            }
        }
        let mut wakes = Vec::new();
        if let Some(task) = task {
            if self.task(task).is_some_and(|t| t.current == Some(id)) {
                let next = parent.filter(|p| self.node(*p).is_some_and(|n| n.task == Some(task)));
                self.tasks[task.idx as usize].current = next;
                // A cancellation the removed node hid (a shield) is visible to the task now.
                if let Some(nx) = next {
                    if !was_effective && self.nodes[nx.idx as usize].effective {
                        self.note_newly_effective(nx.idx, &mut wakes);
                    }
                }
            }
        }
        self.unlink_and_free(id);
        for ci in children {
            self.recompute_subtree(ci, &mut wakes);
        }
        Ok(wakes)
    }

    /// Moves a node (a task's root node, with its subtree) under another parent; returns the
    /// tasks a cancellation now visible to them must wake. Used when a child of
    /// `TaskGroup.start()` calls `started()`: it leaves the caller's scope for the group's.
    pub fn reparent(&mut self, id: NodeId, new_parent: NodeId) -> Vec<Wake> {
        let mut wakes = Vec::new();
        if self.node(id).is_none() || self.node(new_parent).is_none() || id == new_parent {
            return wakes;
        }
        self.unlink_from_parent(id);
        self.nodes[id.idx as usize].parent = Some(new_parent);
        self.link_child(new_parent, id);
        self.recompute_subtree(id.idx, &mut wakes);
        wakes
    }

    /// Makes a node (a task's root node, with its subtree) a root of the tree: no cancellation
    /// above it reaches it any more. Used when a run's root group hands a task that is still
    /// running over to the loop's next run (structured-exit=loop): between runs it belongs to
    /// no scope. Returns the tasks to wake (none: a detached subtree only loses cancellations).
    pub fn detach(&mut self, id: NodeId) -> Vec<Wake> {
        let mut wakes = Vec::new();
        if self.node(id).is_none() {
            return wakes;
        }
        self.unlink_from_parent(id);
        self.nodes[id.idx as usize].parent = None;
        self.recompute_subtree(id.idx, &mut wakes);
        wakes
    }

    /// Takes a node out of its parent's child list (its `parent` field is left to the caller).
    fn unlink_from_parent(&mut self, id: NodeId) {
        let (parent, prev, next) = {
            let n = &self.nodes[id.idx as usize];
            (n.parent, n.prev_sibling, n.next_sibling)
        };
        if let Some(p) = prev {
            self.nodes[p as usize].next_sibling = next;
        } else if let Some(parent) = parent.filter(|p| self.node(*p).is_some()) {
            self.nodes[parent.idx as usize].first_child = next;
        }
        if let Some(nx) = next {
            self.nodes[nx as usize].prev_sibling = prev;
        }
        let n = &mut self.nodes[id.idx as usize];
        n.prev_sibling = None;
        n.next_sibling = None;
    }

    pub fn is_effectively_cancelled(&self, id: NodeId) -> bool {
        self.node(id).is_some_and(|n| n.effective)
    }

    /// Whether the task's innermost scope is effectively cancelled (level delivery).
    pub fn task_should_deliver_level(&self, task: TaskId) -> bool {
        match self.task(task) {
            Some(t) if !t.delivery_suppressed => t
                .current
                .and_then(|c| self.node(c))
                .is_some_and(|n| n.effective),
            _ => false,
        }
    }

    /// Edge mode: whether one cancellation is owed; taking it clears the debt.
    pub fn take_edge_delivery(&mut self, task: TaskId) -> bool {
        match self.task_mut(task) {
            Some(t) if !t.delivery_suppressed && t.edge_pending => {
                t.edge_pending = false;
                true
            }
            _ => false,
        }
    }

    /// Edge mode: whether a cancellation is owed, without paying it.
    pub fn edge_delivery_pending(&self, task: TaskId) -> bool {
        self.task(task)
            .is_some_and(|t| !t.delivery_suppressed && t.edge_pending)
    }

    /// The reason of the scope a delivery to `task` comes from: the outermost cancelled node
    /// visible from the task's innermost node (up to and including the first shield).
    pub fn delivery_reason(&self, task: TaskId) -> Option<String> {
        let mut cur = self.task(task)?.current;
        let mut found: Option<&Node> = None;
        while let Some(id) = cur {
            let Some(n) = self.node(id) else { break };
            if n.cancel_called {
                found = Some(n);
            }
            if n.shield {
                break;
            }
            cur = n.parent;
        }
        found.and_then(|n| n.reason.clone())
    }

    pub fn set_delivery_suppressed(&mut self, task: TaskId, suppressed: bool) {
        if let Some(t) = self.task_mut(task) {
            t.delivery_suppressed = suppressed;
        }
    }

    /// Whether a cancellation that reached `id` is caught there: the scope was cancelled itself
    /// and the cancellation is not also visible from its parent (then the outer scope catches).
    pub fn catches(&self, id: NodeId) -> bool {
        let Some(n) = self.node(id) else { return false };
        if !n.cancel_called {
            return false;
        }
        if n.shield {
            return true;
        }
        !n.parent
            .and_then(|p| self.node(p))
            .is_some_and(|p| p.effective)
    }

    /// Marks the node cancelled; returns the tasks that must be woken.
    pub fn cancel(&mut self, id: NodeId) -> Vec<Wake> {
        self.cancel_with_reason(id, None)
    }

    /// Like `cancel`, remembering the first reason given.
    pub fn cancel_with_reason(&mut self, id: NodeId, reason: Option<String>) -> Vec<Wake> {
        let mut wakes = Vec::new();
        let Some(n) = self.node_mut(id) else {
            return wakes;
        };
        if n.reason.is_none() {
            n.reason = reason;
        }
        n.cancel_called = true;
        if !n.effective {
            n.effective = true;
            self.propagate(id.idx, &mut wakes);
        }
        wakes
    }

    /// Lifts a node's own cancellation (used for `Task.uncancel()` back to zero); returns nothing
    /// to wake since lifting never cancels.
    pub fn uncancel(&mut self, id: NodeId) {
        let Some(n) = self.node_mut(id) else { return };
        n.cancel_called = false;
        self.recompute_subtree(id.idx, &mut Vec::new());
    }

    pub fn set_shield(&mut self, id: NodeId, shield: bool) -> Vec<Wake> {
        let mut wakes = Vec::new();
        let Some(n) = self.node_mut(id) else {
            return wakes;
        };
        if n.shield == shield {
            return wakes;
        }
        n.shield = shield;
        self.recompute_subtree(id.idx, &mut wakes);
        wakes
    }

    pub fn set_deadline(&mut self, id: NodeId, deadline: f64) {
        if let Some(n) = self.node_mut(id) {
            n.deadline = deadline;
        }
    }

    /// The earliest deadline that applies to the task, up to the first shield;
    /// `-inf` when the task is effectively cancelled.
    pub fn effective_deadline(&self, task: TaskId) -> f64 {
        let Some(t) = self.task(task) else {
            return f64::INFINITY;
        };
        let mut cur = t.current;
        let mut best = f64::INFINITY;
        if cur.and_then(|c| self.node(c)).is_some_and(|n| n.effective) {
            return f64::NEG_INFINITY;
        }
        while let Some(id) = cur {
            let Some(n) = self.node(id) else { break };
            best = best.min(n.deadline);
            if n.shield {
                break;
            }
            cur = n.parent;
        }
        best
    }

    fn effective_of(&self, idx: u32) -> bool {
        let n = &self.nodes[idx as usize];
        n.cancel_called
            || (!n.shield
                && n.parent
                    .and_then(|p| self.node(p))
                    .is_some_and(|p| p.effective))
    }

    fn note_newly_effective(&mut self, idx: u32, wakes: &mut Vec<Wake>) {
        let n = &self.nodes[idx as usize];
        let Some(task) = n.task else { return };
        let id = self.id_at(idx);
        if let Some(t) = self.task_mut(task) {
            if t.current == Some(id) {
                t.edge_pending = true;
                if !t.delivery_suppressed {
                    wakes.push(Wake {
                        task,
                        handle: t.handle,
                    });
                }
            }
        }
    }

    /// Depth-first over the subtree below `idx` (whose flag just turned on), turning on every
    /// unshielded descendant.
    fn propagate(&mut self, idx: u32, wakes: &mut Vec<Wake>) {
        self.note_newly_effective(idx, wakes);
        let mut stack = vec![idx];
        while let Some(i) = stack.pop() {
            let mut c = self.nodes[i as usize].first_child;
            while let Some(ci) = c {
                let cn = &mut self.nodes[ci as usize];
                c = cn.next_sibling;
                if !cn.effective && !cn.shield {
                    cn.effective = true;
                    self.note_newly_effective(ci, wakes);
                    stack.push(ci);
                }
            }
        }
    }

    /// Recomputes the flags of `idx` and its subtree after a shield or uncancel change.
    fn recompute_subtree(&mut self, idx: u32, wakes: &mut Vec<Wake>) {
        let mut stack = vec![idx];
        while let Some(i) = stack.pop() {
            let new = self.effective_of(i);
            let old = self.nodes[i as usize].effective;
            if new == old && i != idx {
                continue;
            }
            self.nodes[i as usize].effective = new;
            if new && !old {
                self.note_newly_effective(i, wakes);
            }
            let mut c = self.nodes[i as usize].first_child;
            while let Some(ci) = c {
                c = self.nodes[ci as usize].next_sibling;
                stack.push(ci);
            }
        }
    }

    /// Walks the subtree of `id` (for tests and diagnostics): number of live nodes below it.
    pub fn subtree_len(&self, id: NodeId) -> usize {
        if self.node(id).is_none() {
            return 0;
        }
        let mut count = 0;
        let mut stack = vec![id.idx];
        while let Some(i) = stack.pop() {
            count += 1;
            let mut c = self.nodes[i as usize].first_child;
            while let Some(ci) = c {
                c = self.nodes[ci as usize].next_sibling;
                stack.push(ci);
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reparent_moves_a_task_between_scopes() {
        let mut tree = Tree::new();
        let (caller, caller_root) = task_with_root(&mut tree, 1, None);
        let caller_scope = tree
            .open_scope(caller, false, false, f64::INFINITY)
            .unwrap();
        let (host, host_root) = task_with_root(&mut tree, 2, None);
        let group = tree.open_scope(host, false, false, f64::INFINITY).unwrap();
        let (child, child_root) = task_with_root(&mut tree, 3, Some(caller_scope));
        // Before started(): the group's cancellation does not reach the child.
        let wakes = tree.cancel(group);
        assert_eq!(
            wakes,
            vec![Wake {
                task: host,
                handle: 2
            }]
        );
        assert!(!tree.task_should_deliver_level(child));
        // After: it does (the child is woken).
        let wakes = tree.reparent(child_root, group);
        assert_eq!(
            wakes,
            vec![Wake {
                task: child,
                handle: 3
            }]
        );
        assert!(tree.task_should_deliver_level(child));
        assert_eq!(tree.subtree_len(caller_scope), 1);
        assert_eq!(tree.subtree_len(group), 2);
        tree.remove_task(child);
        assert_eq!(tree.close(caller_scope), Ok(Some(caller_root)));
        assert_eq!(tree.close(group), Ok(Some(host_root)));
    }

    #[test]
    fn detach_makes_a_task_a_root_and_reparent_brings_it_under_another_group() {
        let mut tree = Tree::new();
        let (host, host_root) = task_with_root(&mut tree, 1, None);
        let first = tree.open_scope(host, false, false, f64::INFINITY).unwrap();
        let (child, child_root) = task_with_root(&mut tree, 2, Some(first));
        let (sibling, _) = task_with_root(&mut tree, 3, Some(first));
        assert_eq!(tree.detach(child_root), vec![]);
        assert_eq!(tree.subtree_len(first), 2); // the group's scope and the sibling
                                                // A cancellation of the group it left does not reach it.
        tree.cancel(first);
        assert!(tree.task_should_deliver_level(sibling));
        assert!(!tree.task_should_deliver_level(child));
        tree.remove_task(sibling);
        assert_eq!(tree.close(first), Ok(Some(host_root)));
        // The next group's cancellation does, once it is adopted there.
        let second = tree.open_scope(host, false, false, f64::INFINITY).unwrap();
        tree.cancel(second);
        let wakes = tree.reparent(child_root, second);
        assert_eq!(
            wakes,
            vec![Wake {
                task: child,
                handle: 2
            }]
        );
        assert!(tree.task_should_deliver_level(child));
        tree.remove_task(child);
        assert_eq!(tree.close(second), Ok(Some(host_root)));
        tree.remove_task(host);
        assert_eq!((tree.live_nodes(), tree.live_tasks()), (0, 0));
    }

    #[test]
    fn splice_out_a_node_in_the_middle_of_a_stack() {
        let mut tree = Tree::new();
        let (t, root) = task_with_root(&mut tree, 1, None);
        let outer = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        let gen = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        let inner = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        assert_eq!(tree.nodes_above(outer), Some(vec![inner, gen]));
        assert_eq!(tree.splice_out(gen), Ok(vec![]));
        assert!(!tree.node_alive(gen));
        assert_eq!(tree.nodes_above(outer), Some(vec![inner]));
        // The outer scope's cancellation still reaches the inner one (and wakes the task).
        let wakes = tree.cancel(outer);
        assert_eq!(wakes.len(), 1);
        assert!(tree.is_effectively_cancelled(inner));
        assert_eq!(tree.close(inner), Ok(Some(outer)));
        assert_eq!(tree.close(outer), Ok(Some(root)));
    }

    #[test]
    fn splice_out_the_innermost_shield_exposes_the_cancellation() {
        let mut tree = Tree::new();
        let (t, root) = task_with_root(&mut tree, 7, None);
        let outer = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        let shield = tree.open_scope(t, true, false, f64::INFINITY).unwrap();
        assert!(tree.cancel(outer).is_empty());
        let wakes = tree.splice_out(shield).unwrap();
        assert_eq!(wakes, vec![Wake { task: t, handle: 7 }]);
        assert_eq!(tree.current_node(t), Some(outer));
        assert!(tree.task_should_deliver_level(t));
        assert_eq!(tree.splice_out(shield), Err(TreeError::StaleNode));
        assert_eq!(tree.close(outer), Ok(Some(root)));
    }

    fn task_with_root(tree: &mut Tree, handle: usize, parent: Option<NodeId>) -> (TaskId, NodeId) {
        let t = tree.add_task(handle);
        let n = tree.open_task_node(t, parent).unwrap();
        (t, n)
    }

    #[test]
    fn cancel_reaches_tasks_below_and_wakes_innermost_only() {
        let mut tree = Tree::new();
        let (host, host_root) = task_with_root(&mut tree, 1, None);
        let group = tree.open_scope(host, false, false, f64::INFINITY).unwrap();
        let (child, _) = task_with_root(&mut tree, 2, Some(group));
        let inner = tree.open_scope(child, false, false, f64::INFINITY).unwrap();
        let wakes = tree.cancel(group);
        let woken: Vec<usize> = wakes.iter().map(|w| w.handle).collect();
        assert_eq!(woken, vec![1, 2]);
        assert!(tree.task_should_deliver_level(child));
        assert!(tree.task_should_deliver_level(host));
        assert!(tree.is_effectively_cancelled(inner));
        assert!(!tree.is_effectively_cancelled(host_root));
    }

    #[test]
    fn shield_blocks_outer_cancel_but_not_own() {
        let mut tree = Tree::new();
        let (t, _) = task_with_root(&mut tree, 1, None);
        let outer = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        let shielded = tree.open_scope(t, true, false, f64::INFINITY).unwrap();
        assert!(tree.cancel(outer).is_empty());
        assert!(!tree.task_should_deliver_level(t));
        let inner = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        assert_eq!(tree.cancel(inner).len(), 1);
        assert!(tree.catches(inner));
        tree.close(inner).unwrap();
        assert!(!tree.task_should_deliver_level(t));
        // Lifting the shield exposes the outer cancellation and wakes the task.
        assert_eq!(tree.set_shield(shielded, false).len(), 1);
        assert!(tree.task_should_deliver_level(t));
        assert!(!tree.catches(shielded));
        tree.close(shielded).unwrap();
        assert!(tree.catches(outer));
    }

    #[test]
    fn outermost_cancelled_scope_catches() {
        let mut tree = Tree::new();
        let (t, _) = task_with_root(&mut tree, 1, None);
        let outer = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        let inner = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        tree.cancel(inner);
        tree.cancel(outer);
        assert!(!tree.catches(inner));
        tree.close(inner).unwrap();
        assert!(tree.catches(outer));
    }

    #[test]
    fn scope_opened_inside_cancelled_scope_is_effectively_cancelled_but_does_not_catch() {
        let mut tree = Tree::new();
        let (t, _) = task_with_root(&mut tree, 1, None);
        let outer = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        tree.cancel(outer);
        let inner = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        assert!(tree.is_effectively_cancelled(inner));
        assert!(!tree.catches(inner));
    }

    #[test]
    fn exit_out_of_order_is_refused_and_state_kept() {
        let mut tree = Tree::new();
        let (t, _) = task_with_root(&mut tree, 1, None);
        let a = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        let b = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        assert_eq!(tree.close(a), Err(TreeError::NotInnermost));
        tree.close(b).unwrap();
        tree.close(a).unwrap();
        assert_eq!(tree.close(a), Err(TreeError::StaleNode));
    }

    #[test]
    fn ids_are_recycled_with_new_generations_and_nothing_leaks() {
        let mut tree = Tree::new();
        let (t, root) = task_with_root(&mut tree, 1, None);
        for _ in 0..1000 {
            let s = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
            tree.close(s).unwrap();
            assert!(!tree.node_alive(s));
        }
        assert_eq!(tree.live_nodes(), 1);
        let s = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        tree.remove_task(t);
        assert!(!tree.node_alive(s) && !tree.node_alive(root));
        assert_eq!((tree.live_nodes(), tree.live_tasks()), (0, 0));
        // A stale id never touches the recycled slot.
        let (t2, root2) = task_with_root(&mut tree, 2, None);
        assert!(tree.cancel(root).is_empty());
        assert!(!tree.task_should_deliver_level(t2));
        assert!(tree.node_alive(root2));
    }

    #[test]
    fn siblings_unlink_in_any_order() {
        let mut tree = Tree::new();
        let (host, _) = task_with_root(&mut tree, 0, None);
        let group = tree.open_scope(host, false, false, f64::INFINITY).unwrap();
        let kids: Vec<_> = (1..=5)
            .map(|h| task_with_root(&mut tree, h, Some(group)))
            .collect();
        tree.remove_task(kids[2].0);
        tree.remove_task(kids[0].0);
        tree.remove_task(kids[4].0);
        assert_eq!(tree.subtree_len(group), 3);
        let mut woken: Vec<usize> = tree.cancel(group).iter().map(|w| w.handle).collect();
        woken.sort();
        assert_eq!(woken, vec![0, 2, 4]);
    }

    #[test]
    fn suppressed_task_is_not_woken_and_edge_debt_is_paid_once() {
        let mut tree = Tree::new();
        let (t, _) = task_with_root(&mut tree, 7, None);
        let s = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        tree.set_delivery_suppressed(t, true);
        assert!(tree.cancel(s).is_empty());
        assert!(!tree.task_should_deliver_level(t));
        tree.set_delivery_suppressed(t, false);
        assert!(tree.task_should_deliver_level(t));
        assert!(tree.take_edge_delivery(t));
        assert!(!tree.take_edge_delivery(t));
    }

    #[test]
    fn effective_deadline_stops_at_shield_and_is_minus_inf_when_cancelled() {
        let mut tree = Tree::new();
        let (t, _) = task_with_root(&mut tree, 1, None);
        let a = tree.open_scope(t, false, false, 10.0).unwrap();
        let _b = tree.open_scope(t, false, false, 20.0).unwrap();
        assert_eq!(tree.effective_deadline(t), 10.0);
        let c = tree.open_scope(t, true, false, 30.0).unwrap();
        assert_eq!(tree.effective_deadline(t), 30.0);
        tree.set_deadline(c, 5.0);
        assert_eq!(tree.effective_deadline(t), 5.0);
        tree.cancel(a);
        assert_eq!(tree.effective_deadline(t), 5.0);
        tree.cancel(c);
        assert_eq!(tree.effective_deadline(t), f64::NEG_INFINITY);
    }

    #[test]
    fn delivery_reason_is_the_outermost_cancelled_scope_up_to_a_shield() {
        let mut tree = Tree::new();
        let (t, _) = task_with_root(&mut tree, 1, None);
        let a = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        let b = tree.open_scope(t, false, false, f64::INFINITY).unwrap();
        tree.cancel_with_reason(b, Some("inner".into()));
        assert_eq!(tree.delivery_reason(t).as_deref(), Some("inner"));
        tree.cancel_with_reason(a, Some("outer".into()));
        tree.cancel_with_reason(a, Some("ignored".into()));
        assert_eq!(tree.delivery_reason(t).as_deref(), Some("outer"));
        tree.set_shield(b, true);
        assert_eq!(tree.delivery_reason(t).as_deref(), Some("inner"));
    }

    #[test]
    fn uncancel_lifts_own_cancellation_only() {
        let mut tree = Tree::new();
        let (t, root) = task_with_root(&mut tree, 1, None);
        tree.cancel(root);
        assert!(tree.task_should_deliver_level(t));
        tree.uncancel(root);
        assert!(!tree.task_should_deliver_level(t));
    }
}
