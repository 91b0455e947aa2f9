"""Content filtering (issue 15): policies and blocklists as Azure manages them, the classifiers
that evaluate prompts and completions, and the pipeline that applies a deployment's policy.

See docs/content-filtering.md.
"""
