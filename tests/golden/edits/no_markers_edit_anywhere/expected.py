from math import pi


def area(r):
    return pi * r * r
