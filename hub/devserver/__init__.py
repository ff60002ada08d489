"""devserver"""
