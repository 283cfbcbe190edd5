"""Adapters for the study's eight tasks, each reading its data set's published on-disk format.

Each adapter follows the study's rules where the study states them and the public files allow;
its docstring (and the run file ``configs/paper/t<k>.yaml``) gives the study's numbers and says
where public files cannot reproduce them. ``medprobe data RUN.yaml`` shows what an adapter builds.

=====  ==================  ==============================================  ===========  ==========
task   adapter             data (train/val -> test)                        labels       metric
=====  ==================  ==============================================  ===========  ==========
t1     ``kather``          NCT-CRC-HE-100K -> CRC-VAL-HE-7K                9 tissues    F1 (macro)
t2     ``pannuke``         PanNuke folds 1-3 pooled, seeded 80/20          benign/mal.  F1 (macro)
t3     ``isic2018``        ISIC 2018 train + validation -> official test   7 diagnoses  AUC
t4     ``siim_isic2020``   SIIM-ISIC 2020 train, 79/21 by patient          benign/mal.  AUC
t5     ``eyepacs_aptos``   EyePACS Kaggle train + test -> APTOS-2019       5 DR grades  AUC
t6     ``airogs_odir``     AIROGS -> all ODIR-5K eyes (external)           glaucoma     AUC
t7     ``padchest``        PadChest frontal; test = 30 % of radiologist-   findings     AUC
                           labelled patients
t8     ``knee_kl``         OAI / MOST, a test set per cohort               KL 0-4       AUC
=====  ==================  ==============================================  ===========  ==========

Modules by task family: :mod:`.pathology` (t1, t2), :mod:`.dermatology` (t3, t4),
:mod:`.ophthalmology` (t5, t6), :mod:`.padchest` (t7), :mod:`.knee` (t8); shared helpers in
:mod:`.common`.

Conventions shared by all adapters:

* Images are never read while the table is built; ``Dataset.read_image`` reads one lazily and
  applies the study's preprocessing (:func:`medprobe.data.images.preprocess`, ``max_size``).
* ``source`` is the image path relative to ``Dataset.root`` (the common parent of the image
  folders); ``sample_id`` is a stable, readable id (the image name, prefixed by the cohort when a
  task combines two data sets).
* ``group`` is the patient (or lesion) id where the data set publishes one, else ``None``; no group
  ever spans two splits (:class:`~medprobe.data.dataset.Dataset` checks this).
* Splits the data set does not define are drawn with
  :func:`medprobe.data.splits.group_stratified_split` (whole patients, stratified by class,
  seeded by ``seed``).
* Every rule that drops a row lists it in ``Dataset.excluded`` with a fixed reason per rule, so
  ``medprobe data`` counts the rows each rule removed.
* ``check_files=True`` lists the image folders once and drops (into ``Dataset.excluded``, with the
  reason) rows whose image is missing; a folder holding none of the listed images is an error, as
  it almost always means a wrong path. Images may sit directly in the folder or in subfolders.
  ``check_files=False`` skips the listing and assumes the documented layout.
"""

from __future__ import annotations

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from medprobe.data.dataset import Dataset, TaskType
from medprobe.data.paper.dermatology import ISIC2018_CLASSES, SIIM_CLASSES, load_isic2018, load_siim_isic2020
from medprobe.data.paper.knee import KL_CLASSES, load_knee_kl
from medprobe.data.paper.ophthalmology import (
    DR_CLASSES,
    GLAUCOMA_CLASSES,
    load_airogs_odir,
    load_eyepacs_aptos,
    odir_eye_label,
)
from medprobe.data.paper.padchest import load_padchest, padchest_csv_path, parse_padchest_labels
from medprobe.data.paper.pathology import (
    KATHER_CLASSES,
    PANNUKE_CLASSES,
    PANNUKE_TYPES,
    count_nuclei,
    load_kather,
    load_pannuke,
    pannuke_fold_files,
)
from medprobe.study_prompt import PROMPT_TEMPLATE


@dataclass(frozen=True)
class PaperTask:
    """One of the study's tasks: how to load it and what the study used with it."""

    task_id: str
    adapter_name: str
    loader: Callable[..., Dataset]
    title: str
    discipline: str
    #: the adjective in the study's prompt template
    domain: str
    #: the prompt given with each image to vision-language backbones
    prompt: str
    #: headline metric, as the run file's ``task_metric`` spells it
    metric: str
    task_type: TaskType


def _task(task_id: str, adapter_name: str, loader: Callable[..., Dataset], title: str, discipline: str,
          domain: str, metric: str, task_type: TaskType) -> PaperTask:
    return PaperTask(task_id, adapter_name, loader, title, discipline, domain,
                     PROMPT_TEMPLATE.format(domain=domain), metric, task_type)


#: The study's eight tasks: F1 for the two pathology tasks, AUC for the others.
PAPER_TASKS: dict[str, PaperTask] = {
    task.task_id: task
    for task in (
        _task("t1", "kather", load_kather, "Colorectal tissue classes (Kather)", "pathology",
              "histological", "f1_macro", "multiclass"),
        _task("t2", "pannuke", load_pannuke, "Benign vs malignant nuclei patches (PanNuke)", "pathology",
              "histological", "f1_macro", "binary"),
        _task("t3", "isic2018", load_isic2018, "Skin lesion diagnosis (ISIC 2018 / HAM10000)", "dermatology",
              "dermatological", "auc", "multiclass"),
        _task("t4", "siim_isic2020", load_siim_isic2020, "Melanoma detection (SIIM-ISIC 2020)", "dermatology",
              "dermatological", "auc", "binary"),
        _task("t5", "eyepacs_aptos", load_eyepacs_aptos, "Diabetic retinopathy grade (EyePACS -> APTOS)",
              "ophthalmology", "ophthalmological", "auc", "multiclass"),
        _task("t6", "airogs_odir", load_airogs_odir, "Referable glaucoma (AIROGS -> ODIR)", "ophthalmology",
              "ophthalmological", "auc", "binary"),
        _task("t7", "padchest", load_padchest, "Chest radiograph findings (PadChest)", "radiology",
              "radiological", "auc", "multilabel"),
        _task("t8", "knee_kl", load_knee_kl, "Knee osteoarthritis KL grade (OAI / MOST)", "radiology",
              "radiological", "auc", "multiclass"),
    )
}

__all__ = [
    "DR_CLASSES",
    "GLAUCOMA_CLASSES",
    "ISIC2018_CLASSES",
    "KATHER_CLASSES",
    "KL_CLASSES",
    "PANNUKE_CLASSES",
    "PANNUKE_TYPES",
    "PAPER_TASKS",
    "PROMPT_TEMPLATE",
    "PaperTask",
    "SIIM_CLASSES",
    "count_nuclei",
    "load_airogs_odir",
    "load_eyepacs_aptos",
    "load_isic2018",
    "load_kather",
    "load_knee_kl",
    "load_padchest",
    "load_pannuke",
    "load_siim_isic2020",
    "odir_eye_label",
    "padchest_csv_path",
    "pannuke_fold_files",
    "parse_padchest_labels",
]
