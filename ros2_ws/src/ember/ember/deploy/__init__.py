"""ember-deploy: the robot deployment package (build and check) and the container health check."""
