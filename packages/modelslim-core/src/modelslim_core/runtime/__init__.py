"""What runners, processors and savers share: units, linear sites, the run context and the processor protocol."""
