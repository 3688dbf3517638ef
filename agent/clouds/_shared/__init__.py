"""Code several clouds share: bounded metadata HTTP, the EC2-style token flow and path watchers,
parse helpers."""
