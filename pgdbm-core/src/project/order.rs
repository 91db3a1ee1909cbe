//! The order modules' migrations run in: pgdbm (Python)'s `resolve_module_order`, with the
//! cycle it detects named.

use std::path::Path;

use super::{ModuleConfig, ProjectError};

#[derive(Clone, Copy, PartialEq)]
enum Mark {
    New,
    OnPath,
    Placed,
}

/// Depth-first, modules in file order, each after its dependencies in `depends_on` order: the
/// same walk as Python's, so the same order. Names no module has are skipped (as in Python;
/// parsing already refused them).
pub(super) fn module_order<'m>(
    modules: &'m [ModuleConfig],
    path: &Path,
) -> Result<Vec<&'m ModuleConfig>, ProjectError> {
    struct Walk<'m> {
        modules: &'m [ModuleConfig],
        marks: Vec<Mark>,
        path: Vec<usize>,
        out: Vec<&'m ModuleConfig>,
    }
    impl Walk<'_> {
        /// `Err` carries the cycle's module indices.
        fn visit(&mut self, i: usize) -> Result<(), Vec<usize>> {
            match self.marks[i] {
                Mark::Placed => return Ok(()),
                Mark::OnPath => {
                    let from = self.path.iter().position(|&p| p == i).unwrap_or(0);
                    let mut cycle = self.path[from..].to_vec();
                    cycle.push(i);
                    return Err(cycle);
                }
                Mark::New => {}
            }
            self.marks[i] = Mark::OnPath;
            self.path.push(i);
            for dep in &self.modules[i].depends_on {
                if let Some(j) = self.modules.iter().position(|m| &m.name == dep) {
                    self.visit(j)?;
                }
            }
            self.path.pop();
            self.marks[i] = Mark::Placed;
            self.out.push(&self.modules[i]);
            Ok(())
        }
    }
    let mut walk = Walk {
        modules,
        marks: vec![Mark::New; modules.len()],
        path: Vec::new(),
        out: Vec::with_capacity(modules.len()),
    };
    for i in 0..modules.len() {
        walk.visit(i).map_err(|cycle| ProjectError::Cycle {
            path: path.to_path_buf(),
            cycle: cycle.into_iter().map(|j| modules[j].name.clone()).collect(),
        })?;
    }
    Ok(walk.out)
}
