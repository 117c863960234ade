"""stadapt's built-in tuning methods, registered under `stadapt.tuners` exactly as a third party's are:
`st_adapter` (the paper's method), its baselines `linear`, `full_finetune` and `partial_finetune`, `aim`,
`zeroi2v`, and Hugging Face PEFT's `lora`, `dora` and `ia3` (peft imported only when a model is built)."""

from stadapt_tuners.aim import AimTuner
from stadapt_tuners.baselines import FullFinetune, LinearProbe, PartialFinetune
from stadapt_tuners.peft_methods import DoraTuner, Ia3Tuner, LoraTuner
from stadapt_tuners.st_adapter import StAdapterTuner
from stadapt_tuners.zeroi2v import ZeroI2VTuner

st_adapter = StAdapterTuner()
linear = LinearProbe()
full_finetune = FullFinetune()
partial_finetune = PartialFinetune()
aim = AimTuner()
zeroi2v = ZeroI2VTuner()
lora = LoraTuner()
dora = DoraTuner()
ia3 = Ia3Tuner()

__all__ = ["AimTuner", "DoraTuner", "FullFinetune", "Ia3Tuner", "LinearProbe", "LoraTuner", "PartialFinetune",
           "StAdapterTuner", "ZeroI2VTuner", "aim", "dora", "full_finetune", "ia3", "linear", "lora",
           "partial_finetune", "st_adapter", "zeroi2v"]
