"""HTTP edge: routers, schemas, dependencies and the error mapping."""
