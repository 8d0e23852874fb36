"""Rollback targets behind one interface (:mod:`actions.executors.base`), chosen by ``target.kind``."""
