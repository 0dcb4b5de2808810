"""The task's classes and the input normalisation every model and renderer shares."""

CLASSES = ("no_person", "person")
NUM_CLASSES = len(CLASSES)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
