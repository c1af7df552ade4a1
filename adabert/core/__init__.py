"""The shared engine every stage stands on: errors, atomic files and fingerprints, logging and devices, config
validation, schedules, numerical guards, loss functions and regression-head initialisation. Imports nothing
from the rest of the package."""
