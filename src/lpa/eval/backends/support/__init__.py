"""Helpers of the backends (not backends themselves): the fake OpenAI-compatible test server."""
