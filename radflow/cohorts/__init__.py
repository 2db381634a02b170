"""Cohorts: portable JSON filters over the site catalog."""
