"""The run's configuration: typed fields, the checks every entry point runs before anything
heavy loads, the command line's own checks, and the resolvers the YAML files use.

`CONF` is the Hydra config directory (`conf/` beside the package, the entry points'
`config_path="../conf"`).
"""

from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "conf"
