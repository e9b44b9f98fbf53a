"""What a finished batch job reports: scored, failed, throughput."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Summary:
    engine: str
    model_uri: str
    scored: int = 0
    failed: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0  # session/model start-up, excluded from images_per_second

    @property
    def total(self) -> int:
        return self.scored + self.failed

    @property
    def images_per_second(self) -> float:
        busy = self.seconds - self.startup_seconds
        return self.total / busy if busy > 0 else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"total": self.total, "images_per_second": round(self.images_per_second, 1)}

    def line(self) -> str:
        return (
            f"scored {self.scored}, failed {self.failed} of {self.total} inputs with {self.model_uri} "
            f"({self.engine}) in {self.seconds:.1f}s: {self.images_per_second:.1f} images/s"
            + (f" after {self.startup_seconds:.1f}s of start-up" if self.startup_seconds else "")
        )
