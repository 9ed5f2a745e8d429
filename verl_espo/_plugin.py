"""Target of the ``verl.plugins`` entry point: veRL imports it in every process that imports ``verl``
(driver, TaskRunner, Ray workers). Importing it registers everything the plugin adds to veRL.

veRL logs entry-point errors at DEBUG level only; the version check therefore logs its own error first.
The platform registers first: some veRL modules ask for the platform when they are imported.
"""

from verl_espo._compat import check_verl_version

check_verl_version()

import verl_espo.losses  # noqa: E402,F401  policy losses: espo
import verl_espo.platform  # noqa: E402,F401  platform: cpu (active with VERL_PLATFORM=cpu)
import verl_espo.rollout  # noqa: E402,F401  rollout backends: hf
import verl_espo.trainer  # noqa: E402,F401  V1 trainers: espo_sync
