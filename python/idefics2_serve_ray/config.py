"""What a deployment is made of: how many replicas, what each holds, and the `idefics2 serve` they run."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Idefics2RayConfig(BaseModel):
    """The deployment's settings, checked before anything starts (pydantic comes with ray[serve])."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="--model of each replica's `idefics2 serve`; None: the embedded model")
    serve_args: tuple[str, ...] = Field((), description="more `idefics2 serve` flags, e.g. ('--quantization', '4bit')")
    command: tuple[str, ...] | None = Field(
        None,
        description="how to start the idefics2 CLI on every node; None: the package's own dist/cli/main.js, else PATH",
    )
    replicas: int = Field(1, ge=1, description="fixed replica count (ignored when autoscaling)")
    autoscale_min: int | None = Field(None, ge=0)
    autoscale_max: int | None = Field(None, ge=1)
    target_ongoing_requests: float = Field(4.0, gt=0, description="autoscaling aims at this many requests per replica")
    max_ongoing_requests: int = Field(16, ge=1, description="requests one replica takes at once (its batch and queue)")
    num_gpus_per_replica: float = Field(0.0, ge=0)
    num_cpus_per_replica: float = Field(1.0, ge=0)
    retries: int = Field(2, ge=0, description="times a request is sent again when its replica fails before answering")
    startup_timeout_s: float = Field(1800.0, gt=0, description="time a replica's server may take to load its model")
    health_check_period_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _autoscale_bounds(self) -> Idefics2RayConfig:
        if (self.autoscale_min is None) != (self.autoscale_max is None):
            raise ValueError("autoscale_min and autoscale_max go together")
        low, high = self.autoscale_min, self.autoscale_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"autoscale_min {self.autoscale_min} is above autoscale_max {self.autoscale_max}")
        return self

    @property
    def autoscaling(self) -> bool:
        return self.autoscale_max is not None

    def serve_command(self) -> list[str]:
        """The child command line of one replica, less the address flags (the replica picks those)."""
        from .idefics2_cli import idefics2_cli

        model = ["--model", self.model] if self.model is not None else []
        return [*(self.command or idefics2_cli()), "serve", *model, *self.serve_args]
