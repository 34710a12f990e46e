"""The vtax agent: the task functions that run load, and the processes that host them.

`agent` never imports `controller`; the controller reaches agents only through task names and JSON.
"""
