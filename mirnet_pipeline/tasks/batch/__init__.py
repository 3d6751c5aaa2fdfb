"""The batch-enhancement room: the job and its chunk processor with the
resume ledger (``job``), image decoding, encoding and measures (``images``),
local folders and S3 as object stores (``stores``) (stage enhance,
``mirnet-enhance``)."""
