"""Screenshots of TensorBoard's Scalars, HParams and Projector tabs (headless Chromium)."""
import sys
from playwright.sync_api import sync_playwright

url, out = sys.argv[1], sys.argv[2]
args = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
    page = browser.new_page(viewport={"width": 1500, "height": 820})
    # Scalars: the test accuracy of the three runs.
    page.goto(url + "/#scalars&tagFilter=epoch_accuracy&regexInput=test")
    page.wait_for_timeout(6000)
    page.screenshot(path=f"{out}/tensorboard_scalars.png")
    # HParams: the columns that tell the runs apart, and their results.
    page.goto(url + "/#hparams")
    page.wait_for_timeout(6000)
    for name in ("alpha", "augment", "batch_size", "dataset", "epochs"):
        page.locator("tf-hparams-query-pane").get_by_role("checkbox", name=name, exact=True).first.uncheck()
    for name in ("model", "teacher", "kind"):
        page.locator("tf-hparams-query-pane").get_by_role("checkbox", name=name, exact=True).first.check()
    page.wait_for_timeout(3000)
    page.screenshot(path=f"{out}/tensorboard_hparams.png")
    # Projector: the distilled student's embedding, each point drawn as its image.
    page.goto(url + "/#projector")
    page.wait_for_timeout(15000)
    page.screenshot(path=f"{out}/tensorboard_projector.png")
    browser.close()
