"""The data room: fetching TID2013 and LoL (or making their offline sample),
checking their layouts, indexing them into pairs manifests, and writing and
reading the TFRecord shards the trainings read (stages fetch, index, shards)."""
