//! [`PVec`]: a persistent vector, so that a new version of a type's subscriber list costs
//! the path to the changed element, not a copy of the list.
//!
//! A send keeps the version it snapshotted (an `Arc` clone) for as long as it delivers,
//! while registrations make new versions. Copying the whole list per registration made
//! 100,000 registrations of one type quadratic (1,022 s). Here the elements sit in leaves
//! of up to 32, under branches of up to 32 children: a push, `set` or pop copies at most one
//! node per level (`Arc::make_mut` copies a node only if an older version still shares
//! it), so a change is O(log₃₂ n): four levels cover a million subscribers.
//!
//! Invariants: every leaf but the last is full (32 elements) and every branch but the
//! last along the right edge is full, so element `i` is found by its index digits in base
//! 32; `level` is the height of the root (0: the root is a leaf); `len` is the number of
//! elements; the root is `None` exactly when `len == 0`.

use std::sync::Arc;

const BITS: u32 = 5;
const WIDTH: usize = 1 << BITS;
const MASK: usize = WIDTH - 1;

#[derive(Clone)]
enum Node<T> {
    Leaf(Vec<T>),
    Branch(Vec<Arc<Node<T>>>),
}

/// A persistent vector (see the module docs). Cloning it is one `Arc` clone.
pub(crate) struct PVec<T> {
    root: Option<Arc<Node<T>>>,
    len: usize,
    level: u32,
}

impl<T> Clone for PVec<T> {
    fn clone(&self) -> Self {
        PVec {
            root: self.root.clone(),
            len: self.len,
            level: self.level,
        }
    }
}

impl<T> Default for PVec<T> {
    fn default() -> Self {
        PVec {
            root: None,
            len: 0,
            level: 0,
        }
    }
}

impl<T: Clone> PVec<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The elements from `i` to the end of the leaf that holds `i` (empty if `i >= len`).
    pub(crate) fn run_from(&self, i: usize) -> &[T] {
        if i >= self.len {
            return &[];
        }
        let mut node = self.root.as_deref().expect("len > 0");
        let mut level = self.level;
        loop {
            match node {
                Node::Leaf(items) => return &items[i & MASK..],
                Node::Branch(children) => {
                    node = &children[(i >> (BITS * level)) & MASK];
                    level -= 1;
                }
            }
        }
    }

    /// Every element, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        (0..self.len)
            .step_by(WIDTH)
            .flat_map(move |start| self.run_from(start))
    }

    /// Appends `item`.
    pub(crate) fn push(&mut self, item: T) {
        let Some(root) = &mut self.root else {
            self.root = Some(Arc::new(Node::Leaf(vec![item])));
            self.len = 1;
            self.level = 0;
            return;
        };
        if self.len == WIDTH << (BITS * self.level) {
            // Full at this height: the old root becomes the first child of a new one.
            let old = root.clone();
            *root = Arc::new(Node::Branch(vec![old]));
            self.level += 1;
        }
        push_at(root, self.level, self.len, item);
        self.len += 1;
    }

    /// Replaces element `i`, handing back the old one.
    pub(crate) fn set(&mut self, i: usize, item: T) -> T {
        assert!(
            i < self.len,
            "index {i} out of range for a PVec of {}",
            self.len
        );
        let mut node = self.root.as_mut().expect("len > 0");
        let mut level = self.level;
        loop {
            match Arc::make_mut(node) {
                Node::Leaf(items) => return std::mem::replace(&mut items[i & MASK], item),
                Node::Branch(children) => {
                    node = &mut children[(i >> (BITS * level)) & MASK];
                    level -= 1;
                }
            }
        }
    }

    /// Removes the last element.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let root = self.root.as_mut()?;
        let (item, emptied) = pop_at(root, self.level, self.len - 1);
        self.len -= 1;
        if emptied {
            self.root = None;
            self.level = 0;
        } else {
            // A root with one child is that child, one level down.
            while self.level > 0 {
                let only = match self.root.as_deref() {
                    Some(Node::Branch(children)) if children.len() == 1 => children[0].clone(),
                    _ => break,
                };
                self.root = Some(only);
                self.level -= 1;
            }
        }
        Some(item)
    }

    /// Removes element `i`, moving the last element into its place (order is not kept),
    /// and returns it.
    pub(crate) fn swap_remove(&mut self, i: usize) -> T {
        let last = self.pop().expect("swap_remove on an empty PVec");
        if i == self.len {
            last
        } else {
            self.set(i, last)
        }
    }
}

fn push_at<T: Clone>(node: &mut Arc<Node<T>>, level: u32, index: usize, item: T) {
    match Arc::make_mut(node) {
        Node::Leaf(items) => items.push(item),
        Node::Branch(children) => {
            let child = (index >> (BITS * level)) & MASK;
            if child == children.len() {
                children.push(Arc::new(path_to(level - 1, item)));
            } else {
                push_at(&mut children[child], level - 1, index, item);
            }
        }
    }
}

/// A new chain of nodes from `level` down to a leaf holding only `item`.
fn path_to<T>(level: u32, item: T) -> Node<T> {
    if level == 0 {
        Node::Leaf(vec![item])
    } else {
        Node::Branch(vec![Arc::new(path_to(level - 1, item))])
    }
}

/// Removes element `index` (the last); `true` if `node` is left empty.
fn pop_at<T: Clone>(node: &mut Arc<Node<T>>, level: u32, index: usize) -> (T, bool) {
    match Arc::make_mut(node) {
        Node::Leaf(items) => {
            let item = items.pop().expect("the last leaf holds the last element");
            (item, items.is_empty())
        }
        Node::Branch(children) => {
            let child = (index >> (BITS * level)) & MASK;
            let (item, emptied) = pop_at(&mut children[child], level - 1, index);
            if emptied {
                children.pop();
            }
            (item, children.is_empty())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_vec_through_pushes_sets_and_swap_removes() {
        let mut p = PVec::default();
        let mut v = Vec::new();
        let mut versions = Vec::new();
        let mut seed = 7u64;
        for step in 0..if cfg!(miri) { 300 } else { 20_000 } {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (seed >> 33) as usize;
            if v.is_empty() || r % 3 != 0 {
                p.push(step);
                v.push(step);
            } else {
                let i = r % v.len();
                assert_eq!(p.swap_remove(i), v.swap_remove(i));
            }
            if step % 997 == 0 {
                versions.push((p.clone(), v.clone()));
            }
            assert_eq!(p.len(), v.len());
        }
        assert!(p.iter().copied().eq(v.iter().copied()));
        // Old versions are untouched by later changes.
        for (old, expected) in versions {
            assert!(old.iter().copied().eq(expected.iter().copied()));
        }
        while let Some(x) = p.pop() {
            assert_eq!(Some(x), v.pop());
        }
        assert!(p.root.is_none() && p.level == 0);
    }

    #[test]
    fn a_run_ends_at_its_leaf() {
        let mut p = PVec::default();
        for i in 0..70 {
            p.push(i);
        }
        assert_eq!(p.run_from(0).len(), 32);
        assert_eq!(p.run_from(30), &[30, 31]);
        assert_eq!(p.run_from(64), &[64, 65, 66, 67, 68, 69]);
        assert!(p.run_from(70).is_empty());
    }
}
