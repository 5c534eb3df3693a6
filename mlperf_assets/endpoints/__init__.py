"""MLPerf Endpoints, pure: the points planner (``plan``), the reference client's YAML and a point's job (``client``),
a point as a run of the runners and the ledger (``runs``), a point's figures as the checker computes them
(``results``), the disclosure files (``disclose``), the bundle and its checker (``bundle``), the charts (``charts``).
No Dagster here; the assets are ``mlperf_assets/assets/endpoints*.py``."""
