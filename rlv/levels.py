"""Every level of every factor, by name: the extension point of the design.

A new level is one class (in the module it belongs to) plus one line here. Levels are registered
by "module:Class" path and imported only when a trial builds them, so this module, and checking a
sweep against it, needs neither torch nor Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlv.registry import Registry

if TYPE_CHECKING:
    from rlv.datasets import Dataset
    from rlv.trial.models.encoders import Encoder
    from rlv.trial.models.inits import Init
    from rlv.trial.models.layers import LayerType
    from rlv.trial.models.priors import Prior
    from rlv.trial.objective import Objective

_MODELS = "rlv.trial.models"

ENCODERS: Registry[Encoder] = Registry("encoder", f"{_MODELS}.encoders:Encoder")
ENCODERS.register("L", f"{_MODELS}.encoders:Learnable")
ENCODERS.register("PNL", f"{_MODELS}.encoders:PartiallyNonLearnable")
ENCODERS.register("NL", f"{_MODELS}.encoders:NonLearnable")
ENCODERS.register("RKS", f"{_MODELS}.encoders:RandomKitchenSinks")
ENCODERS.register("PRKS", f"{_MODELS}.encoders:PartialRandomKitchenSinks")

LAYERS: Registry[LayerType] = Registry("layer type", f"{_MODELS}.layers:LayerType")
LAYERS.register("fc", f"{_MODELS}.layers:FullyConnected")
LAYERS.register("conv", f"{_MODELS}.layers:Convolutional")

PRIORS: Registry[Prior] = Registry("prior", f"{_MODELS}.priors:Prior")
PRIORS.register("normal", f"{_MODELS}.priors:StandardNormal")
PRIORS.register("flow2", f"{_MODELS}.priors:RealNVP", flows=2)
PRIORS.register("flow6", f"{_MODELS}.priors:RealNVP", flows=6)
PRIORS.register("mog", f"{_MODELS}.mixture_priors:MixtureOfGaussians")
PRIORS.register("vamp", f"{_MODELS}.mixture_priors:VampPrior")

INITS: Registry[Init] = Registry("init", f"{_MODELS}.inits:Init")
INITS.register("xavier_uniform", f"{_MODELS}.inits:XavierUniform")
INITS.register("xavier_normal", f"{_MODELS}.inits:XavierNormal")
INITS.register("kaiming_uniform", f"{_MODELS}.inits:KaimingUniform")
INITS.register("kaiming_normal", f"{_MODELS}.inits:KaimingNormal")
INITS.register("torch_default", f"{_MODELS}.inits:TorchDefault")

OBJECTIVES: Registry[Objective] = Registry("objective", "rlv.trial.objective:Objective")
OBJECTIVES.register("elbo", "rlv.trial.objective:Elbo")
OBJECTIVES.register("thesis", "rlv.trial.objective:ThesisRT")

DATASETS: Registry[Dataset] = Registry("dataset", "rlv.datasets:Dataset")
DATASETS.register("mnist", "rlv.datasets:Mnist")
DATASETS.register("svhn", "rlv.datasets:Svhn")
DATASETS.register("cifar10", "rlv.datasets:Cifar10")
