"""Raw data sets (COCO, Karpathy, VQA v2, easy-VQA, generated scenes) -> the prepared layout."""
