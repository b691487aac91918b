//! The invariants of the simulated host, checked after every mutating call
//! in debug builds and available to the harness as [`SimFs::check`].

use std::collections::BTreeMap;

use super::{Node, SimFs, ROOT_INO};

impl SimFs {
    /// Checks that the tree, the link counts, the writer table, the free
    /// inode numbers, the birth times and the event queue agree.
    pub fn check(&self) -> Result<(), String> {
        let root = self.inodes.get(&ROOT_INO).ok_or("no root inode")?;
        if !matches!(
            root.node,
            Node::Dir {
                parent: ROOT_INO,
                ..
            }
        ) {
            return Err("root is not a directory that is its own parent".into());
        }
        self.check_tree()?;
        self.check_writers()?;
        self.check_numbers()?;
        self.inotify.check()
    }

    /// Every entry points at a live inode; a file's `nlink` is its number
    /// of names; a directory has exactly one name (none for the root) and
    /// knows its parent.
    fn check_tree(&self) -> Result<(), String> {
        let mut names: BTreeMap<u64, u64> = BTreeMap::new();
        for (&dir, inode) in &self.inodes {
            let Node::Dir { entries, .. } = &inode.node else {
                continue;
            };
            for (name, &ino) in entries {
                let target = self.inodes.get(&ino).ok_or_else(|| {
                    format!("entry {name:?} of directory {dir} names freed inode {ino}")
                })?;
                if let Node::Dir { parent, .. } = target.node {
                    if parent != dir {
                        return Err(format!(
                            "directory {ino} is in {dir}, thinks it is in {parent}"
                        ));
                    }
                }
                *names.entry(ino).or_default() += 1;
            }
        }
        for (&ino, inode) in &self.inodes {
            let n = names.get(&ino).copied().unwrap_or(0);
            match inode.node {
                Node::Dir { .. } if ino == ROOT_INO && n != 0 => {
                    return Err("the root has a name".into())
                }
                Node::Dir { .. } if ino != ROOT_INO && n != 1 => {
                    return Err(format!("directory {ino} has {n} names"))
                }
                Node::Dir { .. } => {}
                _ if inode.nlink != n => {
                    return Err(format!("inode {ino}: nlink {} but {n} names", inode.nlink));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Each inode's writer count is the number of open writers on it; only
    /// regular files are written; an inode without names is held open.
    fn check_writers(&self) -> Result<(), String> {
        let mut open: BTreeMap<u64, u32> = BTreeMap::new();
        for w in self.writers.values() {
            *open.entry(w.ino).or_default() += 1;
            let inode = self.inodes.get(&w.ino).ok_or("a writer on a freed inode")?;
            if !matches!(inode.node, Node::File(_)) {
                return Err(format!("a writer on non-file inode {}", w.ino));
            }
            if w.at.hashed
                && w.at
                    .dir
                    .and_then(|d| self.entries(d)?.get(&w.at.name).copied())
                    != Some(w.ino)
            {
                return Err(format!("writer on {} has a stale dentry {:?}", w.ino, w.at));
            }
        }
        for (&ino, inode) in &self.inodes {
            let n = open.get(&ino).copied().unwrap_or(0);
            if inode.writers != n {
                return Err(format!(
                    "inode {ino}: {} writers counted, {n} open",
                    inode.writers
                ));
            }
        }
        Ok(())
    }

    /// Free inode numbers are not in use; birth times are distinct and
    /// never in the future of the last one handed out.
    fn check_numbers(&self) -> Result<(), String> {
        if let Some(ino) = self.free_inos.iter().find(|i| self.inodes.contains_key(i)) {
            return Err(format!("inode {ino} is both free and in use"));
        }
        if self
            .inodes
            .keys()
            .chain(&self.free_inos)
            .any(|&i| i >= self.next_ino)
        {
            return Err("an inode number beyond next_ino".into());
        }
        let mut born: Vec<u64> = self.inodes.values().map(|i| i.born).collect();
        born.sort_unstable();
        let ties = self.birth_tick == 0 && born.windows(2).any(|w| w[0] == w[1]);
        if ties || born.last() > Some(&self.last_born) {
            return Err("birth times are not distinct".into());
        }
        Ok(())
    }
}
