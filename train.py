"""python train.py --help  |  see conf/train.yaml and README.md"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from zoomsr.errors import check_overrides, exit_on_user_error, reject_null_group_overrides
from zoomsr.tasks import preflight, search  # search: the ${zoomsr.direction:...} resolver


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    preflight.check(cfg)  # config and weight errors before Lightning is imported
    from zoomsr.tasks import train

    # a search (hparams_search=...) optimizes one entry of the result
    return search.optimized_value(train.run(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    reject_null_group_overrides(Path(__file__).parent / "conf")  # Hydra: a traceback
    check_overrides(Path(__file__).parent / "conf", "train")  # Hydra: exit 1, many lines
    main()
