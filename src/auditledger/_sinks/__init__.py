"""_sinks"""
