"""Helpers that start and reach the real services integration tests run against."""
