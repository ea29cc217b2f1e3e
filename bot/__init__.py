"""CodegenApp: a GitHub App that validates pull requests and drives coding agents."""

__version__ = "0.1.0"
