"""Spark side of the nightly job: sessions from conf/spark profiles, executor-side dispatch."""
