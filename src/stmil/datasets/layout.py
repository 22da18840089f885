"""The file and folder names of UCF-Crime and UCF-Crime2Local, in one place.

The loaders look for these names and :mod:`stmil.synth` writes them, so a synthetic dataset is
read exactly like the real one. Relative paths are POSIX strings, relative to the dataset root.
"""

from __future__ import annotations

# UCF-Crime (Sultani, Chen and Shah, 2018): split lists and the temporal annotation.
TRAIN_LIST = "Anomaly_Train.txt"
TEST_LIST = "Anomaly_Test.txt"
TEMPORAL = "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
SPLITS_DIR = "Anomaly_Detection_splits"  # the folder the split lists ship in
NORMAL_CATEGORY = "Normal"  # the temporal annotation's Class, and every loader's category

# UCF-Crime2Local (Landi, Snoek and Cucchiara, 2019): split lists and VATIC box files.
SPLIT_FILES = {"train": "Train_split_AD.txt", "test": "Test_split_AD.txt"}
README_DIR = "readme"  # holds the split lists and BOX_DIR
BOX_DIR = "Txt annotations"  # one VATIC file per anomalous video: <video>.txt
VIDEOS_DIR = "videos"
X264 = "_x264"  # the suffix of every video name (Arrest001_x264)


def split_file(split: str) -> str:
    """``readme/Train_split_AD.txt`` (``split="train"``) or ``readme/Test_split_AD.txt``."""
    return f"{README_DIR}/{SPLIT_FILES[split]}"


def box_file(video_id: str) -> str:
    """``readme/Txt annotations/<video_id>.txt``: the VATIC boxes of one video."""
    return f"{README_DIR}/{BOX_DIR}/{video_id}.txt"
