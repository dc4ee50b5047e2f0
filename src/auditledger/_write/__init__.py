"""_write"""
