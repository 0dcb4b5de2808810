"""Where images come from: COCO 2014 with the VWW rule, person/non_person folders, the
built-in synthetic set. Each returns, per split, a sorted list of `SourceItem`s and a
description of itself, so `shards.write_shards` treats them all alike."""
