"""Peak resident memory of a benchmark's processes, sampled in a thread every 50 ms."""
from __future__ import annotations

import threading
import time


class PeakRSS:
    """Peaks of: this process with all its descendants (`total`), the Ray workers among them
    (`ray::` processes of a Ray this process started; none when joining another's cluster), the
    largest single one of them (`worker`), and this process alone (`driver`). Bytes; `mib(name)`
    in MiB."""

    def __init__(self, interval_s: float = 0.05):
        import psutil

        self.me, self.interval_s = psutil.Process(), interval_s
        self.total = self.workers = self.worker = self.driver = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            driver = self.me.memory_info().rss
            total, workers = driver, 0
            for proc in self.me.children(recursive=True):
                try:
                    rss = proc.memory_info().rss
                    total += rss
                    if (proc.cmdline() or [""])[0].startswith("ray::"):
                        workers += rss
                        self.worker = max(self.worker, rss)
                except psutil.Error:
                    continue
            self.total, self.workers = max(self.total, total), max(self.workers, workers)
            self.driver = max(self.driver, driver)
            time.sleep(self.interval_s)

    def mib(self, name: str = "total") -> float:
        return round(getattr(self, name) / 2**20, 1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
