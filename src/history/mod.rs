//! Learning histories and datasets in the Parquet transition schema (in progress).
