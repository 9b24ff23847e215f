"""The study files that ship with tcnsearch; installed as the package `tcnsearch.studies` (see pyproject.toml)."""
