"""stadapt's built-in tuning methods, registered under `stadapt.tuners` exactly as a third party's are:
`st_adapter` (the paper's method), its baselines `linear`, `full_finetune` and `partial_finetune`, and `aim`."""

from stadapt_tuners.aim import AimTuner
from stadapt_tuners.baselines import FullFinetune, LinearProbe, PartialFinetune
from stadapt_tuners.st_adapter import StAdapterTuner

st_adapter = StAdapterTuner()
linear = LinearProbe()
full_finetune = FullFinetune()
partial_finetune = PartialFinetune()
aim = AimTuner()

__all__ = ["AimTuner", "FullFinetune", "LinearProbe", "PartialFinetune", "StAdapterTuner", "full_finetune", "linear",
           "aim", "partial_finetune", "st_adapter"]
