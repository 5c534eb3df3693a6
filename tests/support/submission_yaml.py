"""The `submission:` block the submission tests' configs share: what a machine cannot report, for a test system."""

SUBMISSION_YAML = """\
submission:
  submitter: TestOrg
  system_name: test-local-cpu
  host_storage_type: SSD
  host_storage_capacity: 1 TB
  host_memory_configuration: unknown (test)
  host_networking: none (single node)
  host_networking_topology: N/A
  host_network_card_count: "0"
  accelerator_host_interconnect: N/A
  accelerator_interconnect: N/A
  accelerator_memory_configuration: N/A
  cooling: air
"""
