// Waits until a consumer group's committed offsets on a topic reach the topic's end
// offsets, using Kafka's own Admin client (the classes behind kafka-consumer-groups.sh).
// Run with the broker's libraries: java -cp "$KAFKA_LIB/*" OffsetWatch.java ...
//
// usage: OffsetWatch BOOTSTRAP GROUP TOPIC TIMEOUT_SECONDS [EXPECTED_END]
// Without EXPECTED_END the end offsets are read once at start (a pre-filled topic); with it
// (a topic still being filled) the target is that many messages in total.
// Prints "end=<sum of end offsets>" once, then "done_epoch_ms=<ms> committed=<sum>" when the
// committed sum equals the end sum (exit 0), or "timeout committed=<sum>" (exit 1).
// Polls every 100 ms.
import java.util.*;
import java.util.stream.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

public class OffsetWatch {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], group = args[1], topic = args[2];
        long deadline = System.currentTimeMillis() + Long.parseLong(args[3]) * 1000;
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            long end;
            if (args.length > 4) {
                end = Long.parseLong(args[4]);
            } else {
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            Map<TopicPartition, OffsetSpec> req = d.partitions().stream()
                .collect(Collectors.toMap(i -> new TopicPartition(topic, i.partition()), i -> OffsetSpec.latest()));
            end = admin.listOffsets(req).all().get().values().stream()
                .mapToLong(ListOffsetsResult.ListOffsetsResultInfo::offset).sum();
            }
            System.out.println("end=" + end);
            System.out.flush();
            long committed = -1;
            while (System.currentTimeMillis() < deadline) {
                Map<TopicPartition, OffsetAndMetadata> c =
                    admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
                committed = c.entrySet().stream().filter(e -> e.getKey().topic().equals(topic) && e.getValue() != null)
                    .mapToLong(e -> e.getValue().offset()).sum();
                if (committed >= end) {
                    System.out.println("done_epoch_ms=" + System.currentTimeMillis() + " committed=" + committed);
                    return;
                }
                Thread.sleep(100);
            }
            System.out.println("timeout committed=" + committed);
            System.exit(1);
        }
    }
}
