"""Work that must not hold up the GPU: one thread that runs tasks in the order they come.

At the end of every epoch the training loop hands over metric computation,
TensorBoard writes, overlay pictures and file saves (0.6 s an epoch on
average for the reference U-Net at 256 px on a 2-core developer machine:
results/epoch-end-cpu.md), and goes on training. Tasks run one at a time
and in order, so the files of epoch k are complete before those of epoch
k + 1 begin. An error in a task is raised in the training loop at the next
submit, or at close. At most max_pending tasks wait: a loop faster than its
epoch ends (an H200 trains a fold's epoch in 4 s, while 22 patients are
scored at 256x256 on the CPU) waits for the oldest, so its files trail the
training by at most that many epochs (10 behind on 2026-11-30, and a stop
lost those epochs' records: results/gpu-session-2026-11-30.md).
"""

from concurrent.futures import ThreadPoolExecutor


class BackgroundWork:
    def __init__(self, enabled=True, max_pending=2):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="epoch-end") if enabled else None
        self.pending, self.max_pending = [], max_pending

    def submit(self, function, *args, **kwargs):
        """Run function(*args, **kwargs) after every task submitted before it (at once when disabled)."""
        self.raise_errors()
        if self.executor is None:
            function(*args, **kwargs)
            return
        while len(self.pending) >= self.max_pending:  # back-pressure: wait for the oldest
            self.pending.pop(0).result()
        self.pending.append(self.executor.submit(function, *args, **kwargs))

    def raise_errors(self):
        """Forget the finished tasks, raising the first error among them (once)."""
        finished, running = [], []
        for future in self.pending:
            (finished if future.done() else running).append(future)
        self.pending = running
        for future in finished:
            future.result()

    def wait(self):
        """Wait for every task submitted so far (the executor stays open); raise the first error among them."""
        while self.pending:
            self.pending.pop(0).result()

    def close(self):
        """Wait for every task; raise the first error among them."""
        if self.executor is None:
            return
        pending, self.pending = self.pending, []
        try:
            for future in pending:
                future.result()
        finally:
            self.executor.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
            return
        try:  # the loop's own error wins; the files queued before it are still written
            self.close()
        except Exception:
            pass
