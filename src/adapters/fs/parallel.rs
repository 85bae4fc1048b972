//! Independent per-file work (copying, hashing) spread over a few threads:
//! SHA-256 and page-cache copies are CPU-bound, and files do not depend on
//! each other.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Work on at least this many bytes is spread over threads; below it,
/// starting threads costs more than it saves.
pub(super) const PARALLEL_FROM_BYTES: u64 = 8 << 20;

/// At most this many threads for one tree.
const THREADS_MAX: usize = 4;

/// Applies `work` to every item and returns the results in item order.
/// When `bytes` (the size of the whole job) is large, up to `THREADS_MAX`
/// threads run it, each taking the next item not yet taken; after the first
/// error no thread takes another item, and that error is returned.
pub(super) fn map_items<T, R, E>(
    items: &[T],
    bytes: u64,
    work: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let threads = if bytes < PARALLEL_FROM_BYTES {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(THREADS_MAX)
            .min(items.len())
    };
    if threads <= 1 {
        return items.iter().map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let worker = || -> Result<Vec<(usize, R)>, E> {
        let mut done = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(index) else { break };
            match work(item) {
                Ok(result) => done.push((index, result)),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(done)
    };
    let parts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Vec<_>>()
    });
    let mut results = Vec::with_capacity(items.len());
    for part in parts {
        results.extend(part?);
    }
    results.sort_by_key(|(index, _)| *index);
    Ok(results.into_iter().map(|(_, result)| result).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order_on_any_number_of_threads() {
        let items: Vec<u64> = (0..100).collect();
        for bytes in [0, PARALLEL_FROM_BYTES] {
            let squares = map_items(&items, bytes, |i| {
                // Uneven work, so threads finish out of order.
                std::thread::sleep(std::time::Duration::from_micros((i % 7) * 50));
                Ok::<_, ()>(i * i)
            });
            assert_eq!(
                squares.unwrap(),
                items.iter().map(|i| i * i).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn the_first_error_stops_the_work_and_is_returned() {
        let items: Vec<u64> = (0..10_000).collect();
        let taken = AtomicUsize::new(0);
        let result = map_items(&items, PARALLEL_FROM_BYTES, |&i| {
            taken.fetch_add(1, Ordering::Relaxed);
            if i == 3 {
                Err(format!("item {i}"))
            } else {
                Ok(i)
            }
        });
        assert_eq!(result, Err("item 3".to_owned()));
        assert!(
            taken.load(Ordering::Relaxed) < items.len(),
            "no thread goes on to the end"
        );
    }
}
