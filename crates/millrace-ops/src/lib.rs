//! Built-in operators: vectorized expressions (filter, project, computed
//! columns) and keyed event-time windows.
