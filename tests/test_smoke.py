from tests.helpers import ProcessExporter


def test_process_exporter_serves_metrics(process_factory):
    e: ProcessExporter = process_factory()
    body = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"eventName":"app.page_view","attributes":[{"key":"url.path","value":{"stringValue":"/home"}}]}]}]}]}'
    assert e.post("/v1/logs", body).status_code == 200
    s = e.scrape()
    assert s.value("app_page_views_total", route="/home", service_name="unknown_service") == 1.0
