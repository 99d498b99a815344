//! Small graph algorithms over step dependency lists (`deps[i]` = the steps `i` depends on).

/// A topological order of the steps, or one cycle (as step indices, first repeated last).
pub fn topological_order(deps: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        i: usize,
        deps: &[Vec<usize>],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Open => {
                let from = stack.iter().position(|&s| s == i).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(i);
                return Err(cycle);
            }
            Mark::New => {}
        }
        marks[i] = Mark::Open;
        stack.push(i);
        for &d in &deps[i] {
            visit(d, deps, marks, stack, order)?;
        }
        stack.pop();
        marks[i] = Mark::Done;
        order.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::New; deps.len()];
    let mut order = Vec::with_capacity(deps.len());
    for i in 0..deps.len() {
        visit(i, deps, &mut marks, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// For each step, which steps are upstream of it (reachable by following dependencies,
/// itself not counted): `ancestors(..)[step][other]`. `order` is a topological order.
/// Costs one pass over the edges per step at most, whatever is asked of it afterwards.
pub fn ancestors(deps: &[Vec<usize>], order: &[usize]) -> Vec<Vec<bool>> {
    let mut upstream = vec![vec![false; deps.len()]; deps.len()];
    for &i in order {
        let mut mine = vec![false; deps.len()];
        for &d in &deps[i] {
            mine[d] = true;
            for (m, &u) in mine.iter_mut().zip(&upstream[d]) {
                *m |= u;
            }
        }
        upstream[i] = mine;
    }
    upstream
}

/// The "level" of each step: 0 for roots, else one more than its deepest dependency.
pub fn levels(deps: &[Vec<usize>], order: &[usize]) -> Vec<usize> {
    let mut level = vec![0; deps.len()];
    for &i in order {
        level[i] = deps[i].iter().map(|&d| level[d] + 1).max().unwrap_or(0);
    }
    level
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_a_diamond() {
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2]];
        let order = topological_order(&deps).unwrap();
        let pos = |i| order.iter().position(|&x| x == i).unwrap();
        assert!(pos(0) < pos(1) && pos(1) < pos(3) && pos(2) < pos(3));
        assert_eq!(levels(&deps, &order), [0, 1, 1, 2]);
        let upstream = ancestors(&deps, &order);
        assert!(upstream[3][0] && upstream[3][1] && upstream[3][2] && !upstream[3][3]);
        assert!(!upstream[1][2] && upstream[1][0] && !upstream[0].contains(&true));
    }

    #[test]
    fn finds_a_cycle() {
        let deps = vec![vec![2], vec![0], vec![1]];
        let cycle = topological_order(&deps).unwrap_err();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
    }
}
