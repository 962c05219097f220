"""python evaluate.py --help  |  see conf/evaluate.yaml and README.md"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from zoomsr.errors import check_overrides, exit_on_user_error, reject_null_group_overrides
from zoomsr.metrics.suite import rewrite_bare_metric_list
from zoomsr.tasks import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate.run(cfg)


if __name__ == "__main__":
    reject_null_group_overrides(Path(__file__).parent / "conf")  # Hydra: a traceback
    rewrite_bare_metric_list()  # metrics=[a,b] (before suites) -> metrics.names=[a,b]
    check_overrides(Path(__file__).parent / "conf", "evaluate")  # Hydra: exit 1, many lines
    main()
