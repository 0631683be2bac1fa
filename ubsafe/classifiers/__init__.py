"""Image safety classifiers: the registry (one TOML file each), their rules, surrogates and loaders.

    list_classifiers() / get_entry(name) / weight_files(name)    the registry
    load_classifier(name, weights_dir, device=, fitted_dir=)     a ready classifier
    EmbeddingClassifier.decide(embeddings) -> (pred, score)      the hard rule on cached embeddings
    EmbeddingClassifier.surrogate() -> torch.nn.Module           logits [safe, unsafe] for attacks
    ImageClassifier.decide_images(images) -> (pred, score)       image-based classifiers (nudenet)
    fit_probe(embeddings, labels, seed=) -> Probe                classifiers fitted within a run

Heavy libraries (torch, scikit-learn, onnxruntime) load with the classifier module that needs them.
"""

from ubsafe.classifiers.base import EmbeddingClassifier, ImageClassifier
from ubsafe.classifiers.load import load_classifier
from ubsafe.classifiers.probe import (
    FittedWeightsMissingError,
    Probe,
    fit_entry,
    fit_probe,
    fitted_path,
)
from ubsafe.classifiers.registry import (
    ClassifierEntry,
    RegistryError,
    UnknownClassifierError,
    get_entry,
    list_classifiers,
    missing_weights,
    option_problems,
    resolve_options,
    weight_files,
)

__all__ = [
    "ClassifierEntry",
    "EmbeddingClassifier",
    "FittedWeightsMissingError",
    "ImageClassifier",
    "Probe",
    "RegistryError",
    "UnknownClassifierError",
    "fit_entry",
    "fit_probe",
    "fitted_path",
    "get_entry",
    "list_classifiers",
    "load_classifier",
    "missing_weights",
    "option_problems",
    "resolve_options",
    "weight_files",
]
