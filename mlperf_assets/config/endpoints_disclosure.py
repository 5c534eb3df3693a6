"""The ``endpoints.system`` and ``endpoints.power`` blocks: what an MLPerf Endpoints bundle discloses about the system
(``system_desc.json``, rules §8.2) and its provisioned power (``system_power.json``, Appendix E) that no harness can
measure. Facts the harness records (GPU model and count, driver, CPU, memory) are filled in from the point's run
manifest when the block leaves them out (``mlperf_assets/endpoints/disclose.py``).

Power figures are sourced values only: every TDP names its source type and a source (a URL or a document); a
submitter's own assertion is not an accepted source type, so the model refuses one without a source.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlperf_assets.config.fields import ConfigModel, PositiveFloat, PositiveInt

Availability = Literal["Available", "Preview", "RDI"]
Cooling = Literal["air", "liquid"]
SourceType = Literal["vendor_spec", "publication", "public_statement", "mlc_default"]


class EndpointsSystem(ConfigModel):
    """The system under test, as ``system_desc.json`` names it (one system = one curve)."""

    name: str = Field(min_length=1)  # system_name, also the results/<system>/ folder
    shortened_name: str = Field(min_length=1, max_length=20)  # shortened_system_name (<= 20 characters)
    availability: Availability = "RDI"  # system_availability_status
    availability_url: str | None = None  # required when Available
    target_availability_date: str | None = None  # required when Preview (YYYY-MM-DD)
    system_size: str = "1 node"
    node_count: PositiveInt = 1  # system_node_ensemble_total
    cooling: Cooling = "air"
    submitter_contact: str | None = None
    serving_framework: str = "vLLM"
    operating_system: str | None = None
    host_processor_model_name: str | None = None  # default: the node's /proc/cpuinfo (run manifest)
    host_processor_core_count: PositiveInt | None = None  # default: the node's CPU count (run manifest)
    host_memory_capacity: str | None = None
    host_memory_configuration: str = "not disclosed"
    host_network_card_count: str = "1"
    host_networking: str | None = None
    filesystem: str = "ext4"
    accelerator_model_name: str | None = None  # default: nvidia-smi's GPU name (run manifest)
    accelerators_per_node: PositiveInt | None = None  # default: the GPUs the run listed
    accelerator_memory_capacity: str | None = None  # default: nvidia-smi's memory.total
    driver: str | None = None  # default: nvidia-smi's driver_version
    model_precision: str = "BF16"
    container_link: str | None = None

    @model_validator(mode="after")
    def _availability_details(self) -> EndpointsSystem:
        if self.availability == "Available" and not self.availability_url:
            raise ValueError("availability: Available needs availability_url (where the system can be bought)")
        if self.availability == "Preview" and not self.target_availability_date:
            raise ValueError("availability: Preview needs target_availability_date (YYYY-MM-DD)")
        return self


class SourcedTdp(ConfigModel):
    """A thermal design power with where it comes from."""

    value_w: PositiveFloat
    source_type: SourceType
    source: str = Field(min_length=1)  # URL or document of the figure


class PowerComponent(ConfigModel):
    model: str = Field(min_length=1)
    count_per_node: PositiveInt
    tdp: SourcedTdp


class EndpointsPower(ConfigModel):
    """The provisioned-power inventory (Appendix E, ``component_sum``): major components per node; the checker adds
    the cooling overhead (air 50 %, liquid 30 %). Required for the Standardized division, optional otherwise."""

    nodes_provisioned: PositiveInt = 1
    cpu: PowerComponent | None = None
    accelerator: PowerComponent | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _something_counted(self) -> EndpointsPower:
        if self.cpu is None and self.accelerator is None:
            raise ValueError("power: name at least one of cpu or accelerator (model, count_per_node, tdp)")
        return self
