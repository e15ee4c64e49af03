"""The pipeline runtime: what every Quix Streams app of shopstream runs on.

The router, the services, the analytics and the sink are wiring over plain rules; this
package is the one place that turns them into running apps:

* :mod:`~pipelines.runtime.quix` - the Quix ``Application`` built from the settings
  (guarantee, stable ``transactional.id``, state directory, group timing), and the
  topics an app declares;
* :mod:`~pipelines.runtime.outputs` - producing an app's records so that no record can
  stop it: size limits from the broker, dead letters cut to fit, produce errors turned
  into dead letters or counted;
* :mod:`~pipelines.runtime.running` - the run loop: status published for ``shopstream
  up``, one log line when the broker goes and one when it is back, a failed run
  rebuilt and resumed instead of a restart loop.
"""
